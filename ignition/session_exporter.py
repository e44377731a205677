# Ignition session exporter: the gateway side (WebDev resource; Ignition 7.9 to 8.3).
#
# Paste this whole file into a project library script named `session_exporter`, then give a
# WebDev Python resource this doGet body:
#
#     return session_exporter.handle(request, session)            (8.0 and later)
#     return project.session_exporter.handle(request, session)    (7.9)
#
# `ignition-exporter webdev-script` prints both, with the install steps.
#
# Set TOKEN to a long random string and give the same string to the exporter (token_file or
# token_env). While TOKEN is empty anyone who can reach the URL can read usernames and client
# addresses, and every answer carries a warning saying so.

TOKEN = ''

# ---------------------------------------------------------------------------------------------
# Nothing below needs changing. Python 2.5 syntax only: the same file runs in Ignition 7.9's
# Jython 2.5 and in 8.x's Jython 2.7 (so no `except X as e`, `with`, set literals, dict
# comprehensions or str.format; exceptions are bound through sys.exc_info()).

import sys
import time

try:
    system  # Ignition 8 project scripts see `system` without importing it
except NameError:
    import system

from java.lang import Boolean as _JavaBoolean
from java.lang import Double as _JavaDouble
from java.lang import Float as _JavaFloat
from java.lang import Number as _JavaNumber
from java.lang import String as _JavaString
from java.lang import Throwable as _JavaThrowable
from java.util import Date as _JavaDate
from java.util import Map as _JavaMap

SCHEMA = 1
SYSTEM_NAME_TAG = '[System]Gateway/SystemName'
PERSPECTIVE_KEYS = (
    'id', 'username', 'project', 'userAgent', 'uptime', 'clientAddress', 'lastComm',
    'sessionScope', 'activePages', 'recentBytesSent', 'totalBytesSent', 'pageIds', 'authorized',
)
VISION_COLUMNS = ('username', 'project', 'address', 'isDesigner', 'clientId', 'creationTime')
# Jython's `except Exception` does not catch Java exceptions, and Ignition's functions throw
# them: every guard below catches both.
FAILURES = (Exception, _JavaThrowable)
NO_TOKEN_WARNING = ('TOKEN is empty in the session_exporter script: anyone who can reach this '
                    'URL can read usernames and client addresses')


def _failure():
    """The exception being handled (Jython 2.5 cannot bind it with `as`)."""
    return sys.exc_info()[1]


def _plain(value):
    """A value made of Python types only, so the document serialises the same everywhere,
    whichever Python or Java types the gateway's objects hand back (not documented)."""
    if value is None or isinstance(value, (bool, int, long, float, basestring)):
        return value
    if isinstance(value, _JavaString):
        return unicode(value)
    if isinstance(value, _JavaBoolean):
        return bool(value.booleanValue())
    if isinstance(value, (_JavaDouble, _JavaFloat)):
        return value.doubleValue()
    if isinstance(value, _JavaNumber):
        return _number(value)
    if isinstance(value, _JavaDate):
        return value.getTime()
    if isinstance(value, (dict, _JavaMap)) or hasattr(value, 'keys'):
        return dict([(unicode(k), _plain(value[k])) for k in value.keys()])
    try:
        return [_plain(item) for item in value]
    except TypeError:
        return unicode(value)


def _number(value):
    """Long, Integer, Short, BigInteger stay exact; BigDecimal keeps its fraction."""
    whole = value.longValue()
    if value.doubleValue() == whole:
        return whole
    return value.doubleValue()


def _keys(obj):
    """The keys a map-like object holds, or None when it cannot list them."""
    try:
        return set([unicode(key) for key in obj.keys()])
    except FAILURES:
        return None


def _read(obj, keys, names):
    """The named fields `obj` has, as plain values; fields the gateway left out stay out."""
    out = {}
    for name in names:
        if keys is not None and name not in keys:
            continue
        try:
            out[name] = _plain(obj[name])
        except FAILURES:  # KeyError, or whatever a Java map throws for a missing key
            continue
    return out


def _perspective_session(obj):
    # getSessionInfo returns PyJsonObjectAdapter objects: map-like, not dicts.
    return _read(obj, _keys(obj), PERSPECTIVE_KEYS)


def _vision_row(row, columns):
    # A PyDataSet row, read by column name; `in` on a row would test values, not columns.
    return _read(row, columns, VISION_COLUMNS)


def _perspective(warnings):
    try:
        get_session_info = system.perspective.getSessionInfo
    except AttributeError:
        warnings.append('Perspective module not installed: no Perspective sessions')
        return []
    try:
        return [_perspective_session(obj) for obj in get_session_info()]
    except FAILURES:
        warnings.append('Perspective sessions could not be read: %s' % (_failure(),))
        return []


def _vision(warnings):
    try:
        dataset = system.util.getSessionInfo()
        columns = set([unicode(name) for name in dataset.getColumnNames()])
        return [_vision_row(row, columns) for row in dataset]
    except FAILURES:
        warnings.append('Vision clients and Designers could not be read: %s' % (_failure(),))
        return []


def _read_tag(path):
    """A tag's value: system.tag.readBlocking from 8.0, system.tag.read in 7.9."""
    read_blocking = getattr(system.tag, 'readBlocking', None)
    if read_blocking is None:
        return system.tag.read(path).value
    return read_blocking([path])[0].value


def _gateway_info(warnings):
    # The redundancy role is not read here: no gateway-scope system tag or function that
    # reports it is documented, so the exporter leaves that label empty for WebDev.
    info = {'name': None, 'version': None}
    try:
        info['name'] = _plain(_read_tag(SYSTEM_NAME_TAG))
    except FAILURES:
        warnings.append('gateway name could not be read: %s' % (_failure(),))
    try:
        info['version'] = unicode(system.util.getVersion())
    except FAILURES:
        warnings.append('gateway version could not be read: %s' % (_failure(),))
    return info


def _same(given, expected):
    """Compare in time independent of where the strings differ (Jython lacks
    hmac.compare_digest)."""
    given = given or ''
    difference = len(given) ^ len(expected)
    for a, b in zip(given, expected if len(given) == len(expected) else given):
        difference |= ord(a) ^ ord(b)
    return difference == 0


def _authorized(request):
    header = request['servletRequest'].getHeader('Authorization')
    return _same(header, 'Bearer ' + TOKEN)


def handle(request, session):
    """The doGet body: the schema-1 document, or 401 when the token does not match."""
    if TOKEN and not _authorized(request):
        request['servletResponse'].setStatus(401)
        return {'json': {'error': 'unauthorized: send Authorization: Bearer <TOKEN>'}}
    warnings = []
    if not TOKEN:
        warnings.append(NO_TOKEN_WARNING)
    return {'json': {
        'schema': SCHEMA,
        'gateway': _gateway_info(warnings),
        'collectedAt': int(time.time() * 1000),
        'perspective': _perspective(warnings),
        'vision': _vision(warnings),
        'warnings': warnings,
    }}
