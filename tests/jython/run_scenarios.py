# Runs the gateway script's handle() once per scenario and prints {name: {status, json}}.
# Usage: jython run_scenarios.py SCRIPT SCENARIOS.json   (Python 2.7: this runs in Jython)

import imp
import json
import sys

from standin_system import build_system


class ServletRequest(object):
    def __init__(self, headers):
        self.headers = headers

    def getHeader(self, name):
        return self.headers.get(name)


class ServletResponse(object):
    def __init__(self):
        self.status = 200

    def setStatus(self, status):
        self.status = status


def run(source, spec):
    module = imp.new_module('session_exporter')
    module.system = build_system(spec)  # Ignition project scripts see `system` implicitly
    exec(compile(source, 'session_exporter.py', 'exec'), module.__dict__)
    if 'token' in spec:
        module.TOKEN = spec['token']
    response = ServletResponse()
    request = {'servletRequest': ServletRequest(spec.get('headers', {})),
               'servletResponse': response, 'params': {}, 'headers': spec.get('headers', {})}
    result = module.handle(request, None)
    return {'status': response.status, 'keys': sorted(result.keys()),
            'json': json.loads(json.dumps(result['json']))}


def main():
    source = open(sys.argv[1]).read()
    scenarios = json.load(open(sys.argv[2]))
    out = dict((name, run(source, spec)) for name, spec in scenarios.items())
    sys.stdout.write(json.dumps(out))


main()
