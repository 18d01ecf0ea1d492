/* The engine's term search, compiled: every occurrence of every literal term in a field's
 * normalised text, with the word-boundary rules of bot.rules.terms.find_all.
 *
 * bot/rules/engine.py (Engine._search) is the reference: it runs an Aho-Corasick automaton
 * over the whole text and then checks each raw occurrence's boundaries in Python. This
 * module finds the same occurrences by looking only where they can be:
 *
 *   - a term that starts with a word character and is left-bounded can only occur where a
 *     run of word characters starts, so it is filed under that run (or, for a prefix term,
 *     under its own text, looked up for each prefix of the run): one hash probe per run;
 *   - any other term (Japanese, or one that starts with punctuation) is filed under its
 *     first two characters (or its one), looked up at every position whose character
 *     starts such a term.
 *
 * A probe's candidates are compared character by character with the text, so a hash
 * collision costs a comparison, never a wrong result. The occurrences found then go through
 * the same steps as in Engine._search, in the same order for each search (left to right):
 * the exact-text comparison of a case-sensitive term, the boundary checks, the extension of
 * a prefix over the rest of its word, and "occurrences of one search do not overlap".
 * tests/test_rules_scan.py checks this module against Engine._search.
 *
 * Optional: without a C compiler the package installs without it and the engine searches
 * in Python (bot/rules/native.py says which is in use).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static inline uint64_t hash_step(uint64_t h, Py_UCS4 c) { return (h ^ (uint64_t)c) * FNV_PRIME; }
static inline uint64_t hash_done(uint64_t h) { return h ? h : 1; } /* 0 marks an empty slot */

typedef struct {
    int32_t sid;
    uint8_t left, right, prefix;
    Py_UCS4 *exact; /* the exact text of a case-sensitive term, or NULL */
    Py_ssize_t exact_len;
} Value;

typedef struct {
    Py_UCS4 *chars;
    Py_ssize_t len;
    Value *values;
    Py_ssize_t nvalues;
} Key;

/* Open addressing: a hash → the candidates (key indexes) filed under it. */
typedef struct {
    uint64_t *hashes;
    int32_t *first;
    int32_t *count;
    int32_t *cands;
    uint64_t mask;
    Py_ssize_t size;
} Table;

enum { RUN = 0, PREFIX = 1, ONE = 2, TWO = 3, NTABLES = 4 };

typedef struct {
    PyObject_HEAD
    Key *keys;
    Py_ssize_t nkeys;
    Table tables[NTABLES];
    uint64_t prefix_lengths; /* bit l: some prefix term is l characters long (63: ≥ 63) */
    uint8_t word[8192];      /* the word characters of the BMP, as bits */
    uint8_t starts[8192];    /* bit c & 0xFFFF: some ONE/TWO key starts with such a character */
    PyObject *is_word;       /* is_word_char, for characters beyond the BMP */
} Scanner;

static void table_free(Table *t) {
    PyMem_Free(t->hashes);
    PyMem_Free(t->first);
    PyMem_Free(t->count);
    PyMem_Free(t->cands);
    memset(t, 0, sizeof(*t));
}

static void Scanner_dealloc(Scanner *self) {
    if (self->keys) {
        for (Py_ssize_t k = 0; k < self->nkeys; k++) {
            Key *key = &self->keys[k];
            PyMem_Free(key->chars);
            if (key->values) {
                for (Py_ssize_t v = 0; v < key->nvalues; v++) PyMem_Free(key->values[v].exact);
                PyMem_Free(key->values);
            }
        }
        PyMem_Free(self->keys);
    }
    for (int i = 0; i < NTABLES; i++) table_free(&self->tables[i]);
    Py_XDECREF(self->is_word);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_UCS4 *ucs4_copy(PyObject *text, Py_ssize_t *len) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "expected a str");
        return NULL;
    }
    *len = PyUnicode_GET_LENGTH(text);
    Py_UCS4 *out = PyUnicode_AsUCS4Copy(text);
    return out;
}

static inline int is_word(Scanner *self, Py_UCS4 c) {
    if (c < 0x10000) return (self->word[c >> 3] >> (c & 7)) & 1;
    PyObject *ch = PyUnicode_FromOrdinal((int)c);
    if (!ch) return -1;
    PyObject *r = PyObject_CallOneArg(self->is_word, ch);
    Py_DECREF(ch);
    if (!r) return -1;
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

typedef struct {
    uint64_t hash;
    int32_t key;
} Filed;

static int filed_order(const void *a, const void *b) {
    const Filed *x = a, *y = b;
    if (x->hash != y->hash) return x->hash < y->hash ? -1 : 1;
    return x->key < y->key ? -1 : x->key > y->key;
}

/* Build a table from (hash, key) pairs: sorted, so that one hash's candidates lie together. */
static int table_build(Table *t, Filed *filed, Py_ssize_t n) {
    qsort(filed, (size_t)n, sizeof(Filed), filed_order);
    Py_ssize_t distinct = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (i == 0 || filed[i].hash != filed[i - 1].hash) distinct++;
    Py_ssize_t size = 8;
    while (size < 2 * distinct) size <<= 1;
    t->hashes = PyMem_Calloc((size_t)size, sizeof(uint64_t));
    t->first = PyMem_Calloc((size_t)size, sizeof(int32_t));
    t->count = PyMem_Calloc((size_t)size, sizeof(int32_t));
    t->cands = PyMem_Calloc((size_t)(n ? n : 1), sizeof(int32_t));
    if (!t->hashes || !t->first || !t->count || !t->cands) {
        PyErr_NoMemory();
        return -1;
    }
    t->mask = (uint64_t)size - 1;
    t->size = size;
    for (Py_ssize_t i = 0; i < n; i++) {
        t->cands[i] = filed[i].key;
        if (i > 0 && filed[i].hash == filed[i - 1].hash) continue;
        uint64_t slot = filed[i].hash & t->mask;
        while (t->hashes[slot]) slot = (slot + 1) & t->mask;
        t->hashes[slot] = filed[i].hash;
        t->first[slot] = (int32_t)i;
        Py_ssize_t j = i;
        while (j < n && filed[j].hash == filed[i].hash) j++;
        t->count[slot] = (int32_t)(j - i);
    }
    return 0;
}

static inline Py_ssize_t table_find(const Table *t, uint64_t h) {
    if (!t->size) return -1;
    uint64_t slot = h & t->mask;
    uint64_t seen;
    while ((seen = t->hashes[slot])) {
        if (seen == h) return (Py_ssize_t)slot;
        slot = (slot + 1) & t->mask;
    }
    return -1;
}

/* Scanner(keys, values, filing, word_bmp, is_word)
 *   keys: list[str]; values: list[tuple[(sid, left, right, prefix, exact | None), ...]]
 *   filing: list[(table, probe)] per key: RUN (0) under its first word run, PREFIX (1)
 *   under its text, ONE (2) / TWO (3) under its first one / two characters;
 *   word_bmp: 8,192 bytes, bit c set when chr(c) is a word character. */
static int Scanner_init(Scanner *self, PyObject *args, PyObject *kwds) {
    PyObject *keys, *values, *filing, *is_word_fn;
    Py_buffer bmp;
    static char *kwlist[] = {"keys", "values", "filing", "word_bmp", "is_word", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!O!y*O", kwlist, &PyList_Type, &keys,
                                     &PyList_Type, &values, &PyList_Type, &filing, &bmp,
                                     &is_word_fn))
        return -1;
    int rc = -1;
    Filed *filed[NTABLES] = {NULL, NULL, NULL, NULL};
    Py_ssize_t nfiled[NTABLES] = {0, 0, 0, 0};
    if (bmp.len != 8192) {
        PyErr_SetString(PyExc_ValueError, "word_bmp must be 8192 bytes");
        goto done;
    }
    if (self->keys) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner is already initialised");
        goto done;
    }
    memcpy(self->word, bmp.buf, 8192);
    Py_ssize_t n = PyList_GET_SIZE(keys);
    if (PyList_GET_SIZE(values) != n || PyList_GET_SIZE(filing) != n) {
        PyErr_SetString(PyExc_ValueError, "keys, values and filing differ in length");
        goto done;
    }
    Py_INCREF(is_word_fn);
    self->is_word = is_word_fn;
    self->keys = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Key));
    for (int i = 0; i < NTABLES; i++) filed[i] = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Filed));
    if (!self->keys || !filed[0] || !filed[1] || !filed[2] || !filed[3]) {
        PyErr_NoMemory();
        goto done;
    }
    self->nkeys = n;
    for (Py_ssize_t k = 0; k < n; k++) {
        Key *key = &self->keys[k];
        key->chars = ucs4_copy(PyList_GET_ITEM(keys, k), &key->len);
        if (!key->chars) goto done;
        if (key->len == 0) {
            PyErr_SetString(PyExc_ValueError, "an empty key");
            goto done;
        }
        PyObject *vals = PyList_GET_ITEM(values, k);
        if (!PyTuple_Check(vals)) {
            PyErr_SetString(PyExc_TypeError, "values: expected tuples");
            goto done;
        }
        key->nvalues = PyTuple_GET_SIZE(vals);
        key->values = PyMem_Calloc((size_t)(key->nvalues ? key->nvalues : 1), sizeof(Value));
        if (!key->values) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t v = 0; v < key->nvalues; v++) {
            int sid, left, right, prefix;
            PyObject *exact;
            if (!PyArg_ParseTuple(PyTuple_GET_ITEM(vals, v), "ipppO", &sid, &left, &right,
                                  &prefix, &exact))
                goto done;
            Value *value = &key->values[v];
            value->sid = sid;
            value->left = (uint8_t)left;
            value->right = (uint8_t)right;
            value->prefix = (uint8_t)prefix;
            if (exact != Py_None) {
                value->exact = ucs4_copy(exact, &value->exact_len);
                if (!value->exact) goto done;
            }
        }
        int table;
        PyObject *probe;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(filing, k), "iU", &table, &probe)) goto done;
        if (table < 0 || table >= NTABLES) {
            PyErr_SetString(PyExc_ValueError, "filing: no such table");
            goto done;
        }
        Py_ssize_t plen = PyUnicode_GET_LENGTH(probe);
        if (plen == 0 || plen > key->len || (table == ONE && plen != 1) ||
            (table == TWO && plen != 2)) {
            PyErr_SetString(PyExc_ValueError, "filing: a probe of the wrong length");
            goto done;
        }
        uint64_t h = FNV_OFFSET;
        for (Py_ssize_t i = 0; i < plen; i++) {
            Py_UCS4 c = PyUnicode_READ_CHAR(probe, i);
            if (c != key->chars[i]) {
                PyErr_SetString(PyExc_ValueError, "filing: a probe that does not start its key");
                goto done;
            }
            h = hash_step(h, c);
        }
        filed[table][nfiled[table]].hash = hash_done(h);
        filed[table][nfiled[table]].key = (int32_t)k;
        nfiled[table]++;
        if (table == PREFIX) self->prefix_lengths |= 1ULL << (plen < 63 ? plen : 63);
        if (table == ONE || table == TWO) {
            Py_UCS4 c = key->chars[0] & 0xFFFF;
            self->starts[c >> 3] |= (uint8_t)(1 << (c & 7));
        }
    }
    for (int i = 0; i < NTABLES; i++)
        if (table_build(&self->tables[i], filed[i], nfiled[i]) < 0) goto done;
    rc = 0;
done:
    for (int i = 0; i < NTABLES; i++) PyMem_Free(filed[i]);
    PyBuffer_Release(&bmp);
    return rc;
}

typedef struct {
    Scanner *self;
    const Py_UCS4 *text;
    Py_ssize_t n;
    const Py_UCS4 *exact; /* the exact text (same length), or NULL */
    int fi;
    PyObject *spans;     /* dict: sid << 3 | fi → [(start, end), …] */
    PyObject *fields_of; /* dict: sid → mask of the fields it occurs in */
} Search;

/* Record an occurrence of search ``sid``, unless it overlaps the one before. */
static int add(Search *s, int32_t sid, Py_ssize_t start, Py_ssize_t end) {
    PyObject *key = PyLong_FromLong(((long)sid << 3) | s->fi);
    if (!key) return -1;
    int rc = -1;
    PyObject *found = PyDict_GetItemWithError(s->spans, key);
    if (!found) {
        if (PyErr_Occurred()) goto done;
        PyObject *list = Py_BuildValue("[(nn)]", start, end);
        if (!list) goto done;
        int failed = PyDict_SetItem(s->spans, key, list);
        Py_DECREF(list);
        if (failed) goto done;
        PyObject *sid_obj = PyLong_FromLong(sid);
        if (!sid_obj) goto done;
        PyObject *old = PyDict_GetItemWithError(s->fields_of, sid_obj);
        long mask = 0;
        if (old) {
            mask = PyLong_AsLong(old);
            if (mask == -1 && PyErr_Occurred()) {
                Py_DECREF(sid_obj);
                goto done;
            }
        } else if (PyErr_Occurred()) {
            Py_DECREF(sid_obj);
            goto done;
        }
        PyObject *bits = PyLong_FromLong(mask | (1L << s->fi));
        failed = !bits || PyDict_SetItem(s->fields_of, sid_obj, bits);
        Py_XDECREF(bits);
        Py_DECREF(sid_obj);
        if (failed) goto done;
        rc = 0;
        goto done;
    }
    if (!PyList_Check(found) || PyList_GET_SIZE(found) == 0) {
        PyErr_SetString(PyExc_TypeError, "spans: expected non-empty lists");
        goto done;
    }
    PyObject *last = PyList_GET_ITEM(found, PyList_GET_SIZE(found) - 1);
    Py_ssize_t last_end = PyLong_AsSsize_t(PyTuple_GetItem(last, 1));
    if (last_end == -1 && PyErr_Occurred()) goto done;
    if (start >= last_end) {
        PyObject *span = Py_BuildValue("(nn)", start, end);
        if (!span) goto done;
        int failed = PyList_Append(found, span);
        Py_DECREF(span);
        if (failed) goto done;
    }
    rc = 0;
done:
    Py_DECREF(key);
    return rc;
}

/* Key ``k`` where its text starts at ``start``, if it does: Engine._search's steps. */
static int try_key(Search *s, int32_t k, Py_ssize_t start) {
    const Key *key = &s->self->keys[k];
    Py_ssize_t stop = start + key->len;
    if (stop > s->n) return 0;
    if (memcmp(s->text + start, key->chars, (size_t)key->len * sizeof(Py_UCS4))) return 0;
    for (Py_ssize_t v = 0; v < key->nvalues; v++) {
        const Value *value = &key->values[v];
        if (value->exact) {
            if (!s->exact || value->exact_len != key->len ||
                memcmp(s->exact + start, value->exact, (size_t)key->len * sizeof(Py_UCS4)))
                continue;
        }
        if (value->left && start) {
            int w = is_word(s->self, s->text[start - 1]);
            if (w < 0) return -1;
            if (w) continue;
        }
        Py_ssize_t end = stop;
        if (value->prefix) {
            while (end < s->n) {
                int w = is_word(s->self, s->text[end]);
                if (w < 0) return -1;
                if (!w) break;
                end++;
            }
        } else if (value->right && end < s->n) {
            int w = is_word(s->self, s->text[end]);
            if (w < 0) return -1;
            if (w) continue;
        }
        if (add(s, value->sid, start, end) < 0) return -1;
    }
    return 0;
}

static int try_filed(Search *s, const Table *t, uint64_t h, Py_ssize_t start) {
    Py_ssize_t slot = table_find(t, h);
    if (slot < 0) return 0;
    const int32_t *cands = t->cands + t->first[slot];
    for (int32_t i = 0; i < t->count[slot]; i++)
        if (try_key(s, cands[i], start) < 0) return -1;
    return 0;
}

static int run_search(Search *s) {
    Scanner *self = s->self;
    const Py_UCS4 *text = s->text;
    Py_ssize_t n = s->n;
    const Table *run = &self->tables[RUN], *prefix = &self->tables[PREFIX];
    const Table *one = &self->tables[ONE], *two = &self->tables[TWO];
    int runs = run->size > 0 || prefix->size > 0;
    Py_ssize_t run_end = 0; /* the end of the word run the position is in, if any */
    for (Py_ssize_t p = 0; p < n; p++) {
        Py_UCS4 c = text[p];
        uint32_t low = c & 0xFFFF;
        if ((self->starts[low >> 3] >> (low & 7)) & 1) {
            uint64_t h = hash_step(FNV_OFFSET, c);
            if (one->size && try_filed(s, one, hash_done(h), p) < 0) return -1;
            if (two->size && p + 1 < n &&
                try_filed(s, two, hash_done(hash_step(h, text[p + 1])), p) < 0)
                return -1;
        }
        if (!runs || p < run_end) continue;
        int w = is_word(self, c);
        if (w < 0) return -1;
        if (!w) continue;
        /* A run of word characters starts here: the position before is not one (it is
         * either the start of the text or was looked at and was not part of a run). */
        Py_ssize_t q = p + 1;
        uint64_t h = hash_step(FNV_OFFSET, c);
        if (prefix->size && (self->prefix_lengths >> 1 & 1) &&
            try_filed(s, prefix, hash_done(h), p) < 0)
            return -1;
        while (q < n) {
            int wq = is_word(self, text[q]);
            if (wq < 0) return -1;
            if (!wq) break;
            h = hash_step(h, text[q]);
            q++;
            Py_ssize_t l = q - p;
            if (prefix->size && (self->prefix_lengths >> (l < 63 ? l : 63) & 1) &&
                try_filed(s, prefix, hash_done(h), p) < 0)
                return -1;
        }
        if (run->size && try_filed(s, run, hash_done(h), p) < 0) return -1;
        run_end = q;
    }
    return 0;
}

static PyObject *Scanner_search(Scanner *self, PyObject *args) {
    PyObject *text_obj, *exact_obj, *spans, *fields_of;
    int fi;
    if (!PyArg_ParseTuple(args, "UOiO!O!", &text_obj, &exact_obj, &fi, &PyDict_Type, &spans,
                          &PyDict_Type, &fields_of))
        return NULL;
    if (fi < 0 || fi > 7) {
        PyErr_SetString(PyExc_ValueError, "field index out of range");
        return NULL;
    }
    Search s = {self, NULL, 0, NULL, fi, spans, fields_of};
    Py_UCS4 *text = ucs4_copy(text_obj, &s.n);
    if (!text) return NULL;
    Py_UCS4 *exact = NULL;
    if (exact_obj != Py_None) {
        Py_ssize_t exact_len;
        exact = ucs4_copy(exact_obj, &exact_len);
        if (!exact) {
            PyMem_Free(text);
            return NULL;
        }
        if (exact_len != s.n) {
            PyMem_Free(text);
            PyMem_Free(exact);
            PyErr_SetString(PyExc_ValueError, "the exact text differs in length");
            return NULL;
        }
    }
    s.text = text;
    s.exact = exact;
    int rc = run_search(&s);
    PyMem_Free(text);
    PyMem_Free(exact);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Scanner_methods[] = {
    {"search", (PyCFunction)Scanner_search, METH_VARARGS,
     "search(text, exact_text, field_index, spans, fields_of): add every occurrence found, "
     "as Engine._search does."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot.rules._scan.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Every literal term of every rule, filed for Engine._search's occurrences.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_scan", "The engine's term search, compiled (see _scan.c).", -1,
    NULL,
};

PyMODINIT_FUNC PyInit__scan(void) {
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    Py_INCREF(&ScannerType);
    if (PyModule_AddObject(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(&ScannerType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
