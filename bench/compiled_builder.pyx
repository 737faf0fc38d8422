# cython: language_level=3, boundscheck=False, wraparound=False
"""bench/ingest_compiled.py's prototype (not part of the SDK): lib/body_json.py's builder compiled, with its
checks, for the bench's events. Built by pyximport when Cython is installed."""
from cpython.dict cimport PyDict_Next, PyDict_SetItem
from cpython.object cimport PyObject
import datetime

cdef object _DT = datetime.datetime
cdef object _PLAIN = frozenset({str, int, float, bool, type(None)})


def make(dict layouts, tuple utc, object whole, object plain):
    """A builder for the models in `layouts`: model -> (field names, kinds), a kind per field in order: 0 any
    value, 1 a number (no bool), 2 a datetime (its offset checked), 3 `Any` (plain JSON). Raises as the Python
    builder does for anything it does not take."""
    cdef object utc0 = utc[0], utc1 = utc[1]

    def build(list events):
        cdef list out = []
        cdef dict d, c
        cdef tuple names
        cdef bytes kinds
        cdef Py_ssize_t pos, i
        cdef PyObject* k
        cdef PyObject* v
        cdef object value
        for e in events:
            layout = layouts.get(type(e))
            if layout is None:
                raise TypeError(type(e))
            names, kinds = layout
            d = e.__dict__
            if len(d) != len(names):
                raise ValueError("not the fields")
            c = {}
            pos = 0
            i = 0
            while PyDict_Next(d, &pos, &k, &v):
                if <object>k is not names[i] and <object>k != names[i]:
                    raise ValueError("not the fields' order")
                value = <object>v
                kind = kinds[i]
                i += 1
                if value is None:
                    continue
                if kind == 1:
                    if value is True or value is False:
                        raise ValueError("a bool")
                elif kind == 2:
                    z = value.tzinfo
                    if z is not utc0 and z is not utc1 and not whole(value):
                        raise ValueError("seconds")
                elif kind == 3:
                    if not (type(value) is dict and _PLAIN.issuperset(map(type, value.values())) or plain(value)):
                        raise ValueError("not plain JSON")
                PyDict_SetItem(c, <object>k, value)
            out.append(c)
        return out
    return build
