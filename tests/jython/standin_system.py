# A stand-in for Ignition's `system` scripting module, for running the gateway script under
# Debian's Jython 2.7. It hands back what Ignition hands back: Perspective sessions as
# map-like objects holding Java values (not dicts), the Vision result as a dataset read by row
# and column name, dates as java.util.Date. Two variants: Ignition 8.x (`system.perspective`,
# `system.tag.readBlocking`) and 7.9 (neither; `system.tag.read`). Which Java types a
# PyJsonObjectAdapter hands back is not documented, so a scenario can ask for Integer and
# java.lang.String values besides Long, Double and Boolean. Python 2.7 syntax: runs in Jython.

from java.lang import Boolean, Double, IllegalStateException, Integer, Long, String
from java.util import ArrayList, Date, LinkedHashMap


def java_value(value, narrow=False):
    """`value` as a Java object; `narrow`: Integer where it fits, java.lang.String for text."""
    if isinstance(value, bool):
        return Boolean(value)
    if isinstance(value, (int, long)):
        if narrow and -2 ** 31 <= value < 2 ** 31:
            return Integer(value)
        return Long(value)
    if isinstance(value, float):
        return Double(value)
    if isinstance(value, basestring) and narrow:
        return String(value)
    if isinstance(value, list):
        items = ArrayList()
        for item in value:
            items.add(java_value(item, narrow))
        return items
    return value


class PyJsonObjectAdapter(object):
    """Map-like like Ignition's adapter: item access, keys(), iteration; not a dict."""

    def __init__(self, fields, narrow=False):
        # Values stay Java objects (java.lang.Long, java.util.ArrayList, ...): kept in a Python
        # dict, Jython does not convert them back as it would on the way out of a Java map.
        self._keys = LinkedHashMap()
        self._values = {}
        for key, value in fields.items():
            self._keys.put(key, True)
            self._values[key] = java_value(value, narrow)

    def __getitem__(self, key):
        if key not in self._values:
            raise KeyError(key)
        return self._values[key]

    def keys(self):
        return list(self._keys.keySet())

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self._values)


class PyRow(object):
    def __init__(self, dataset, index):
        self._dataset = dataset
        self._index = index

    def __getitem__(self, key):
        if isinstance(key, (int, long)):
            key = self._dataset.columns[key]
        if key not in self._dataset.columns:
            raise KeyError(key)
        return self._dataset.rows[self._index].get(key)

    def __iter__(self):  # iterating a row yields its values, as in Ignition
        return iter([self[c] for c in self._dataset.columns])


class PyDataSet(object):
    def __init__(self, columns, rows):
        self.columns = list(columns)
        self.rows = rows

    def getColumnNames(self):
        names = ArrayList()
        for name in self.columns:
            names.add(name)
        return names

    def getRowCount(self):
        return len(self.rows)

    def __len__(self):
        return len(self.rows)

    def __iter__(self):
        return iter([PyRow(self, i) for i in range(len(self.rows))])


class _Namespace(object):
    pass


class _QualifiedValue(object):
    def __init__(self, value):
        self.value = value


def build_system(spec):
    """A `system` object answering as the scenario in `spec` says."""
    system = _Namespace()
    system.util = _Namespace()
    system.tag = _Namespace()
    ignition_79 = spec.get('ignition') == '7.9'
    default_version = ignition_79 and '7.9.21 (b2022092908)' or '8.1.33 (b2023091211)'
    system.util.getVersion = lambda: spec.get('version', default_version)

    def read_tag(path):
        if spec.get('systemName') == 'java-error':
            raise IllegalStateException('tag provider not running')
        return _QualifiedValue(spec.get('systemName'))

    if ignition_79:  # 7.9: system.tag.read(path); readBlocking arrived in 8.0
        system.tag.read = read_tag
    else:
        system.tag.readBlocking = lambda paths: [read_tag(path) for path in paths]

    perspective = spec.get('perspective')
    if perspective != 'missing' and not ignition_79:  # no Perspective before 8.0
        system.perspective = _Namespace()

        def get_session_info(usernameFilter=None, projectFilter=None):
            if perspective == 'error':
                raise RuntimeError('Perspective module is faulted')
            if perspective == 'java-error':  # what Ignition's Java code throws
                raise IllegalStateException('Perspective module is faulted')
            narrow = spec.get('javaTypes') == 'narrow'
            return [PyJsonObjectAdapter(item, narrow) for item in perspective]

        system.perspective.getSessionInfo = get_session_info

    vision = spec.get('vision')

    def util_session_info(usernameFilter=None, projectFilter=None):
        if vision == 'error':
            raise RuntimeError('Vision module is faulted')
        if vision == 'java-error':
            raise IllegalStateException('Vision module is faulted')
        columns = ['username', 'project', 'address', 'isDesigner', 'clientId', 'creationTime']
        rows = []
        for row in vision:
            converted = dict((key, java_value(value, spec.get('javaTypes') == 'narrow'))
                             for key, value in row.items())
            converted['creationTime'] = Date(long(row['creationTime']))
            rows.append(converted)
        return PyDataSet(columns, rows)

    system.util.getSessionInfo = util_session_info
    return system
