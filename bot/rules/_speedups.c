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
 * tests/test_rules_native.py checks this module against Engine._search.
 *
 * Optional: without a C compiler the package installs without it and the engine searches
 * in Python (bot/rules/native.py says which is in use).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>
#include <string.h>

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

#if defined(__GNUC__) || defined(__clang__)
#define CTZ64(x) __builtin_ctzll(x)
#else
static inline int CTZ64(uint64_t x) {
    int n = 0;
    while (!(x & 1)) {
        x >>= 1;
        n++;
    }
    return n;
}
#endif

static inline uint64_t hash_step(uint64_t h, Py_UCS4 c) { return (h ^ (uint64_t)c) * FNV_PRIME; }
static inline uint64_t hash_done(uint64_t h) { return h ? h : 1; } /* 0 marks an empty slot */

/* Growable arrays: make room for ``need`` items in ``array`` of capacity ``cap`` (both
 * lvalues), growing it to about twice that: 0, or -1 with MemoryError (the array as it was). */
#define RESERVE(array, cap, need) \
    ((need) <= (cap) ? 0 : grow_array(&(array), &(cap), (need), sizeof *(array)))

static int grow_array(void *array_ptr, Py_ssize_t *cap, Py_ssize_t need, size_t size) {
    void *array, *grown;
    memcpy(&array, array_ptr, sizeof array); /* any object pointer, without aliasing it */
    Py_ssize_t grown_cap = need * 2 + 16;
    if (!(grown = PyMem_Realloc(array, (size_t)grown_cap * size))) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(array_ptr, &grown, sizeof grown);
    *cap = grown_cap;
    return 0;
}

/* An id's first slot in an open-addressed table of ``nslots`` (a power of two). */
static inline Py_ssize_t id_slot(uint64_t id, Py_ssize_t nslots) {
    return (Py_ssize_t)((uint32_t)id * 2654435761u) & (nslots - 1);
}

/* An open-addressed index over the n items of an array (``*slots``: an item's index + 1, 0
 * for none; ``*nslots`` a power of two), built again twice the size (at least 64) when one
 * more item would fill half of it: 0, or -1 with MemoryError. ``slot_of(items, i, nslots)``
 * is item i's first slot. */
typedef Py_ssize_t (*SlotOf)(const void *items, Py_ssize_t i, Py_ssize_t nslots);

static int index_reserve(int32_t **slots, Py_ssize_t *nslots, const void *items, Py_ssize_t n,
                         SlotOf slot_of) {
    if (2 * (n + 1) <= *nslots) return 0;
    Py_ssize_t size = *nslots ? *nslots * 2 : 64;
    int32_t *fresh = PyMem_Calloc((size_t)size, sizeof(int32_t));
    if (!fresh) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_ssize_t slot = slot_of(items, i, size);
        while (fresh[slot]) slot = (slot + 1) & (size - 1);
        fresh[slot] = (int32_t)(i + 1);
    }
    PyMem_Free(*slots);
    *slots = fresh;
    *nslots = size;
    return 0;
}

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

/* Open addressing: a hash → the candidates filed under it, eight bytes a slot. */
struct Slot {
    uint32_t tag;   /* the hash's high half */
    uint32_t group; /* where its group starts in recs, + 1 (0: an empty slot) */
};
/* A group: the full hash (low half, high half), the number of candidates, then each
 * candidate's record, all that checking it reads, in one place: its length, number of
 * values, key index, characters, and (sid, flags) for each value (V_LEFT…). */
enum { V_LEFT = 1, V_RIGHT = 2, V_PREFIX = 4, V_EXACT = 8 };
typedef struct {
    struct Slot *slots; /* tag, and where its candidates are */
    uint32_t *recs;
    uint64_t mask;
    Py_ssize_t size;
    /* A bit per hash's high bits (16 per key): most probes miss, and this answers them
     * from a few kilobytes instead of the table. */
    uint8_t *bloom;
    uint64_t bloom_mask;
} Table;

enum { RUN = 0, PREFIX = 1, ONE = 2, TWO = 3, NTABLES = 4 };

typedef struct {
    PyObject_HEAD
    Key *keys;
    Py_ssize_t nkeys;
    Table tables[NTABLES];
    uint64_t prefix_lengths; /* bit l: some prefix term is l characters long (63: ≥ 63) */
    int starts_in_runs;      /* some ONE/TWO key starts with a word character */
    uint8_t word[8192];      /* the word characters of the BMP, as bits */
    uint8_t starts[8192];    /* bit c & 0xFFFF: some ONE/TWO key starts with such a character */
    uint8_t cls[65536];      /* both, a byte per BMP character: C_WORD | C_STARTS */
    int max_prefix;          /* the longest prefix key filed (PREFIX), 0 when none */
    PyObject *is_word;       /* is_word_char, for characters beyond the BMP */
} Scanner;

enum { C_WORD = 1, C_STARTS = 2 };

static void table_free(Table *t) {
    PyMem_Free(t->bloom);
    PyMem_Free(t->slots);
    PyMem_Free(t->recs);
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
static int table_build(Table *t, const Key *keys, Filed *filed, Py_ssize_t n) {
    qsort(filed, (size_t)n, sizeof(Filed), filed_order);
    Py_ssize_t distinct = 0, nrecs = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i == 0 || filed[i].hash != filed[i - 1].hash) {
            distinct++;
            nrecs += 3; /* the group's header */
        }
        const Key *key = &keys[filed[i].key];
        nrecs += 3 + key->len + 2 * key->nvalues;
    }
    if (nrecs > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many keys for one scanner");
        return -1;
    }
    Py_ssize_t size = 8;
    while (size < 2 * distinct) size <<= 1;
    t->slots = PyMem_Calloc((size_t)size, sizeof(struct Slot));
    t->recs = PyMem_Calloc((size_t)(nrecs ? nrecs : 1), sizeof(uint32_t));
    if (!t->slots || !t->recs) {
        PyErr_NoMemory();
        return -1;
    }
    int32_t *rec_at = PyMem_Calloc((size_t)(n ? n : 1), sizeof(int32_t));
    if (!rec_at) {
        PyErr_NoMemory();
        return -1;
    }
    uint32_t *r = t->recs;
    for (Py_ssize_t i = 0; i < n; i++) {
        const Key *key = &keys[filed[i].key];
        if (i == 0 || filed[i].hash != filed[i - 1].hash) {
            rec_at[i] = (int32_t)(r - t->recs);
            Py_ssize_t j = i;
            while (j < n && filed[j].hash == filed[i].hash) j++;
            *r++ = (uint32_t)filed[i].hash;
            *r++ = (uint32_t)(filed[i].hash >> 32);
            *r++ = (uint32_t)(j - i);
        }
        *r++ = (uint32_t)key->len;
        *r++ = (uint32_t)key->nvalues;
        *r++ = (uint32_t)filed[i].key;
        for (Py_ssize_t c = 0; c < key->len; c++) *r++ = key->chars[c];
        for (Py_ssize_t v = 0; v < key->nvalues; v++) {
            const Value *value = &key->values[v];
            *r++ = (uint32_t)value->sid;
            *r++ = (value->left ? V_LEFT : 0) | (value->right ? V_RIGHT : 0) |
                   (value->prefix ? V_PREFIX : 0) | (value->exact ? V_EXACT : 0);
        }
    }
    t->mask = (uint64_t)size - 1;
    t->size = size;
    uint64_t bits = 4096;
    while (bits < 16 * (uint64_t)distinct) bits <<= 1;
    t->bloom = PyMem_Calloc((size_t)(bits / 8), 1);
    if (!t->bloom) {
        PyErr_NoMemory();
        return -1;
    }
    t->bloom_mask = bits - 1;
    for (Py_ssize_t i = 0; i < n; i++) {
        uint64_t b = (filed[i].hash >> 40) & t->bloom_mask;
        t->bloom[b >> 3] |= (uint8_t)(1 << (b & 7));
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (i > 0 && filed[i].hash == filed[i - 1].hash) continue;
        uint64_t slot = filed[i].hash & t->mask;
        while (t->slots[slot].group) slot = (slot + 1) & t->mask;
        t->slots[slot].tag = (uint32_t)(filed[i].hash >> 32);
        t->slots[slot].group = (uint32_t)rec_at[i] + 1;
    }
    PyMem_Free(rec_at);
    return 0;
}

/* The group of candidates filed under hash h (see Slot), or NULL. */
static inline const uint32_t *table_find(const Table *t, uint64_t h) {
    if (!t->size) return NULL;
    uint64_t b = (h >> 40) & t->bloom_mask;
    if (!((t->bloom[b >> 3] >> (b & 7)) & 1)) return NULL;
    uint64_t slot = h & t->mask;
    uint32_t tag = (uint32_t)(h >> 32), group;
    while ((group = t->slots[slot].group)) {
        if (t->slots[slot].tag == tag) {
            const uint32_t *g = t->recs + group - 1;
            if (g[0] == (uint32_t)h && g[1] == tag) return g;
        }
        slot = (slot + 1) & t->mask;
    }
    return NULL;
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
        if (table == PREFIX) {
            self->prefix_lengths |= 1ULL << (plen < 63 ? plen : 63);
            if (plen > self->max_prefix) self->max_prefix = (int)plen;
        }
        if (table == ONE || table == TWO) {
            Py_UCS4 c = key->chars[0] & 0xFFFF;
            self->starts[c >> 3] |= (uint8_t)(1 << (c & 7));
            int w = is_word(self, key->chars[0]);
            if (w < 0) goto done;
            if (w) self->starts_in_runs = 1;
        }
    }
    for (int i = 0; i < NTABLES; i++)
        if (table_build(&self->tables[i], self->keys, filed[i], nfiled[i]) < 0) goto done;
    for (Py_ssize_t c = 0; c < 65536; c++)
        self->cls[c] = (uint8_t)(((self->word[c >> 3] >> (c & 7)) & 1) * C_WORD |
                                 ((self->starts[c >> 3] >> (c & 7)) & 1) * C_STARTS);
    rc = 0;
done:
    for (int i = 0; i < NTABLES; i++) PyMem_Free(filed[i]);
    PyBuffer_Release(&bmp);
    return rc;
}

/* --- Occurrences: where each search was found, by ``sid << 3 | field`` --------------------
 *
 * The spans the term search finds, kept in C for the matcher and NEAR to read; Python reads
 * them as a dict (Scan.spans, built on first use: only the fallbacks need it). */

typedef struct {
    Py_ssize_t start, end;
} Span;

typedef struct {
    long key;
    Span *spans;
    Py_ssize_t n, cap;
} OccList;

typedef struct {
    PyObject_HEAD
    OccList *lists;
    Py_ssize_t nlists, cap;
    int32_t *slots; /* open addressing by key: index + 1, 0 when empty */
    Py_ssize_t nslots;
} Occurrences;

static void Occurrences_dealloc(Occurrences *self) {
    for (Py_ssize_t i = 0; i < self->nlists; i++) PyMem_Free(self->lists[i].spans);
    PyMem_Free(self->lists);
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static inline Py_ssize_t occ_slot(long key, Py_ssize_t nslots) {
    return (Py_ssize_t)((uint64_t)key * 0x9E3779B97F4A7C15ULL >> 20) & (nslots - 1);
}

static OccList *occ_find(const Occurrences *o, long key) {
    if (!o->nslots) return NULL;
    Py_ssize_t slot = occ_slot(key, o->nslots);
    while (o->slots[slot]) {
        OccList *list = &o->lists[o->slots[slot] - 1];
        if (list->key == key) return list;
        slot = (slot + 1) & (o->nslots - 1);
    }
    return NULL;
}

static Py_ssize_t occ_list_slot(const void *items, Py_ssize_t i, Py_ssize_t nslots) {
    return occ_slot(((const OccList *)items)[i].key, nslots);
}

static OccList *occ_get(Occurrences *o, long key) {
    OccList *found = occ_find(o, key);
    if (found) return found;
    if (index_reserve(&o->slots, &o->nslots, o->lists, o->nlists, occ_list_slot) < 0 ||
        RESERVE(o->lists, o->cap, o->nlists + 1) < 0)
        return NULL;
    Py_ssize_t slot = occ_slot(key, o->nslots);
    while (o->slots[slot]) slot = (slot + 1) & (o->nslots - 1);
    OccList *list = &o->lists[o->nlists];
    *list = (OccList){key, NULL, 0, 0};
    o->slots[slot] = (int32_t)(++o->nlists);
    return list;
}

static int occ_append(OccList *list, Py_ssize_t start, Py_ssize_t end) {
    if (RESERVE(list->spans, list->cap, list->n + 1) < 0) return -1;
    list->spans[list->n++] = (Span){start, end};
    return 0;
}

/* set(key, spans): the spans of ``key`` are these (the engine's regular expressions). */
static PyObject *Occurrences_set(Occurrences *self, PyObject *args) {
    long key;
    PyObject *spans;
    if (!PyArg_ParseTuple(args, "lO!", &key, &PyList_Type, &spans)) return NULL;
    if (key < 0) {
        PyErr_SetString(PyExc_ValueError, "a negative key");
        return NULL;
    }
    OccList *list = occ_get(self, key);
    if (!list) return NULL;
    list->n = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(spans); i++) {
        Py_ssize_t start, end;
        if (!PyArg_ParseTuple(PyList_GET_ITEM(spans, i), "nn", &start, &end) ||
            occ_append(list, start, end) < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

/* as_dict(): {key: [(start, end), …]} for the keys found (Scan.spans). */
static PyObject *Occurrences_as_dict(Occurrences *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < self->nlists; i++) {
        const OccList *list = &self->lists[i];
        if (!list->n) continue;
        PyObject *spans = PyList_New(list->n), *key = PyLong_FromLong(list->key);
        int failed = !spans || !key;
        for (Py_ssize_t j = 0; j < list->n && !failed; j++) {
            PyObject *span = Py_BuildValue("(nn)", list->spans[j].start, list->spans[j].end);
            if (span) PyList_SET_ITEM(spans, j, span);
            else failed = 1;
        }
        if (!failed) failed = PyDict_SetItem(out, key, spans) < 0;
        Py_XDECREF(spans);
        Py_XDECREF(key);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* fields_of(): {sid: mask of the fields it was found in} (Scan.fields_of), from the keys. */
static PyObject *Occurrences_fields_of(Occurrences *self, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyDict_New();
    if (!out) return NULL;
    for (Py_ssize_t i = 0; i < self->nlists; i++) {
        const OccList *list = &self->lists[i];
        if (!list->n) continue;
        PyObject *sid = PyLong_FromLong(list->key >> 3), *bits = NULL;
        PyObject *old = sid ? PyDict_GetItemWithError(out, sid) : NULL; /* borrowed */
        long mask = old ? PyLong_AsLong(old) : 0;
        if (sid && !PyErr_Occurred()) bits = PyLong_FromLong(mask | (1L << (list->key & 7)));
        int failed = !bits || PyDict_SetItem(out, sid, bits) < 0;
        Py_XDECREF(sid);
        Py_XDECREF(bits);
        if (failed) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *occ_list(const OccList *list) {
    PyObject *spans = PyList_New(list->n);
    if (!spans) return NULL;
    for (Py_ssize_t j = 0; j < list->n; j++) {
        PyObject *span = Py_BuildValue("(nn)", list->spans[j].start, list->spans[j].end);
        if (!span) {
            Py_DECREF(spans);
            return NULL;
        }
        PyList_SET_ITEM(spans, j, span);
    }
    return spans;
}

/* get(key, default=None): the spans of key as a list of (start, end), as dict.get. */
static PyObject *Occurrences_get(Occurrences *self, PyObject *args) {
    long key;
    PyObject *otherwise = Py_None;
    if (!PyArg_ParseTuple(args, "l|O", &key, &otherwise)) return NULL;
    const OccList *list = occ_find(self, key);
    if (!list || !list->n) return Py_NewRef(otherwise);
    return occ_list(list);
}

static PyMethodDef Occurrences_methods[] = {
    {"get", (PyCFunction)Occurrences_get, METH_VARARGS,
     "get(key, default=None): the spans found for key, as dict.get."},
    {"set", (PyCFunction)Occurrences_set, METH_VARARGS,
     "set(key, spans): the spans found for key (sid << 3 | field)."},
    {"as_dict", (PyCFunction)Occurrences_as_dict, METH_NOARGS,
     "as_dict(): {sid << 3 | field: [(start, end), ...]}."},
    {"fields_of", (PyCFunction)Occurrences_fields_of, METH_NOARGS,
     "fields_of(): {sid: mask of the fields it was found in}."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject OccurrencesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot.rules._speedups.Occurrences",
    .tp_basicsize = sizeof(Occurrences),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Where each search was found in an entry (Scan.spans, kept in C).",
    .tp_new = PyType_GenericNew,
    .tp_dealloc = (destructor)Occurrences_dealloc,
    .tp_methods = Occurrences_methods,
};

/* The occurrences of one search found in one call, linked in the order found. */
typedef struct {
    int32_t sid;
    int32_t first, last; /* indexes into Search.found */
    Py_ssize_t last_end;
} Found;

typedef struct {
    Py_ssize_t start, end;
    int32_t next; /* the search's next occurrence, or -1 */
} Occurrence;

typedef struct {
    Scanner *self;
    const Py_UCS4 *text;
    Py_ssize_t n;
    const Py_UCS4 *exact; /* the exact text (same length), or NULL */
    /* Searches found (open addressing by sid: ``slots`` holds index + 1, 0 when empty) */
    Found *searches;
    Py_ssize_t nsearches, cap;
    int32_t *slots;
    Py_ssize_t nslots;
    Occurrence *found;
    Py_ssize_t nfound, found_cap;
} Search;

static void search_free(Search *s) {
    PyMem_Free(s->searches);
    PyMem_Free(s->slots);
    PyMem_Free(s->found);
}

static Py_ssize_t found_search_slot(const void *items, Py_ssize_t i, Py_ssize_t nslots) {
    return id_slot((uint32_t)((const Found *)items)[i].sid, nslots);
}

/* Record an occurrence of search ``sid``, unless it overlaps the one before
 * (Engine._search: "occurrences of one search do not overlap"). */
static int add(Search *s, int32_t sid, Py_ssize_t start, Py_ssize_t end) {
    if (index_reserve(&s->slots, &s->nslots, s->searches, s->nsearches, found_search_slot) < 0)
        return -1;
    Py_ssize_t slot = id_slot((uint32_t)sid, s->nslots);
    Found *f = NULL;
    while (s->slots[slot]) {
        Found *seen = &s->searches[s->slots[slot] - 1];
        if (seen->sid == sid) {
            f = seen;
            break;
        }
        slot = (slot + 1) & (s->nslots - 1);
    }
    if (f && start < f->last_end) return 0;
    if (RESERVE(s->found, s->found_cap, s->nfound + 1) < 0) return -1;
    int32_t at = (int32_t)s->nfound++;
    s->found[at] = (Occurrence){start, end, -1};
    if (f) {
        s->found[f->last].next = at;
        f->last = at;
        f->last_end = end;
        return 0;
    }
    if (RESERVE(s->searches, s->cap, s->nsearches + 1) < 0) return -1;
    s->searches[s->nsearches] = (Found){sid, at, at, end};
    s->slots[slot] = (int32_t)(++s->nsearches);
    return 0;
}

/* Hand what was found to the scan: its occurrences of ``sid << 3 | fi`` and
 * ``fields_of[sid]``. */
static int emit(Search *s, int fi, Occurrences *occurrences) {
    for (Py_ssize_t i = 0; i < s->nsearches; i++) {
        const Found *f = &s->searches[i];
        OccList *list = occ_get(occurrences, ((long)f->sid << 3) | fi);
        if (!list) return -1;
        /* another pass found this search here before (the engine never does this) */
        Py_ssize_t last_end = list->n ? list->spans[list->n - 1].end : -1;
        for (int32_t at = f->first; at >= 0; at = s->found[at].next) {
            const Occurrence *o = &s->found[at];
            if (o->start < last_end) continue;
            if (occ_append(list, o->start, o->end) < 0) return -1;
            last_end = o->end;
        }
    }
    return 0;
}

/* Key ``k`` where its text starts at ``start``, if it does: Engine._search's steps. */
/* Check a candidate (its record, see Table) at ``start``: 0, or -1. */
static int try_key(Search *s, const uint32_t *rec, Py_ssize_t start) {
    Py_ssize_t len = rec[0], nvalues = rec[1];
    Py_ssize_t stop = start + len;
    if (stop > s->n) return 0;
    if (memcmp(s->text + start, rec + 3, (size_t)len * sizeof(Py_UCS4))) return 0;
    const uint32_t *values = rec + 3 + len;
    for (Py_ssize_t v = 0; v < nvalues; v++) {
        uint32_t flags = values[2 * v + 1];
        if (flags & V_EXACT) {
            const Value *value = &s->self->keys[rec[2]].values[v];
            if (!s->exact || value->exact_len != len ||
                memcmp(s->exact + start, value->exact, (size_t)len * sizeof(Py_UCS4)))
                continue;
        }
        if ((flags & V_LEFT) && start) {
            int w = is_word(s->self, s->text[start - 1]);
            if (w < 0) return -1;
            if (w) continue;
        }
        Py_ssize_t end = stop;
        if (flags & V_PREFIX) {
            while (end < s->n) {
                int w = is_word(s->self, s->text[end]);
                if (w < 0) return -1;
                if (!w) break;
                end++;
            }
        } else if ((flags & V_RIGHT) && end < s->n) {
            int w = is_word(s->self, s->text[end]);
            if (w < 0) return -1;
            if (w) continue;
        }
        if (add(s, (int32_t)values[2 * v], start, end) < 0) return -1;
    }
    return 0;
}

static int try_filed(Search *s, const Table *t, uint64_t h, Py_ssize_t start) {
    const uint32_t *group = table_find(t, h);
    if (!group) return 0;
    const uint32_t *rec = group + 3;
    for (uint32_t i = 0; i < group[2]; i++) {
        if (try_key(s, rec, start) < 0) return -1;
        rec += 3 + rec[0] + 2 * rec[1];
    }
    return 0;
}

/* A character's class: C_WORD, C_STARTS (BMP by table; beyond it, is_word_char and the
 * starts bit of its low 16 bits), or -1 on error. */
static inline int char_class(Scanner *self, Py_UCS4 c) {
    if (c < 0x10000) return self->cls[c];
    int w = is_word(self, c);
    if (w < 0) return -1;
    return (w ? C_WORD : 0) | (self->cls[c & 0xFFFF] & C_STARTS);
}

static int run_search(Search *s) {
    Scanner *self = s->self;
    const Py_UCS4 *text = s->text;
    Py_ssize_t n = s->n;
    const Table *run = &self->tables[RUN], *prefix = &self->tables[PREFIX];
    const Table *one = &self->tables[ONE], *two = &self->tables[TWO];
    int runs = run->size > 0 || prefix->size > 0;
    Py_ssize_t max_prefix = prefix->size ? self->max_prefix : 0;
    Py_ssize_t run_end = 0; /* the end of the word run the position is in, if any */
    for (Py_ssize_t p = 0; p < n; p++) {
        Py_UCS4 c = text[p];
        int k = char_class(self, c);
        if (k < 0) return -1;
        if (k & C_STARTS) {
            uint64_t h = hash_step(FNV_OFFSET, c);
            if (one->size && try_filed(s, one, hash_done(h), p) < 0) return -1;
            if (two->size && p + 1 < n &&
                try_filed(s, two, hash_done(hash_step(h, text[p + 1])), p) < 0)
                return -1;
        }
        if (!runs || p < run_end || !(k & C_WORD)) continue;
        /* A run of word characters starts here: the position before is not one (it is
         * either the start of the text or was looked at and was not part of a run). */
        Py_ssize_t q = p + 1;
        uint64_t h = hash_step(FNV_OFFSET, c);
        if (max_prefix >= 1 && (self->prefix_lengths >> 1 & 1) &&
            try_filed(s, prefix, hash_done(h), p) < 0)
            return -1;
        while (q < n) {
            int kq = char_class(self, text[q]);
            if (kq < 0) return -1;
            if (!(kq & C_WORD)) break;
            h = hash_step(h, text[q]);
            q++;
            Py_ssize_t l = q - p;
            if (l <= max_prefix && (self->prefix_lengths >> (l < 63 ? l : 63) & 1) &&
                try_filed(s, prefix, hash_done(h), p) < 0)
                return -1;
        }
        if (run->size && try_filed(s, run, hash_done(h), p) < 0) return -1;
        run_end = q;
        /* Inside the run nothing else can start (the ONE/TWO keys start with characters
         * that are not word characters), unless a key says otherwise. */
        if (!self->starts_in_runs) p = q - 1;
    }
    return 0;
}

static PyObject *Scanner_search(Scanner *self, PyObject *args) {
    PyObject *text_obj, *exact_obj;
    Occurrences *occurrences;
    int fi;
    if (!PyArg_ParseTuple(args, "UOiO!", &text_obj, &exact_obj, &fi, &OccurrencesType,
                          &occurrences))
        return NULL;
    if (fi < 0 || fi > 7) {
        PyErr_SetString(PyExc_ValueError, "field index out of range");
        return NULL;
    }
    Search s;
    memset(&s, 0, sizeof(s));
    s.self = self;
    Py_UCS4 *text = ucs4_copy(text_obj, &s.n), *exact = NULL;
    int rc = -1;
    if (!text) goto done;
    if (exact_obj != Py_None) {
        Py_ssize_t exact_len;
        if (!(exact = ucs4_copy(exact_obj, &exact_len))) goto done;
        if (exact_len != s.n) {
            PyErr_SetString(PyExc_ValueError, "the exact text differs in length");
            goto done;
        }
    }
    s.text = text;
    s.exact = exact;
    rc = run_search(&s);
    if (rc == 0) rc = emit(&s, fi, occurrences);
done:
    search_free(&s);
    PyMem_Free(text);
    PyMem_Free(exact);
    if (rc < 0) return NULL;
    Py_RETURN_NONE;
}

static PyMethodDef Scanner_methods[] = {
    {"search", (PyCFunction)Scanner_search, METH_VARARGS,
     "search(text, exact_text, field_index, occurrences): add every occurrence found, as "
     "Engine._search does."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot.rules._speedups.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Every literal term of every rule, filed for Engine._search's occurrences.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

/* --- Matcher: Engine._decide and Engine._matches, compiled -----------------------------------
 *
 * Deciding. The accumulator is a byte array with bit ``rule × stride + slot`` for clause
 * ``slot`` of a rule's query or exclusions: finding a search sets the bits of the clauses it
 * is in (its contribution, a list of positions, in the fields it was found in). A rule
 * matches when the feed is in its scope, every slot of its query is set and its
 * negated-terms slot is not, and its test (for a query the clauses do not decide) says yes;
 * it is excluded the same way by each of its exclusions. Engine._decide does the same with
 * Python's big integers.
 *
 * Matching. A rule's hits are every occurrence of its patterns found in the fields of their
 * group — its free groups, and the groups of each AND-inside-an-OR whose condition holds —
 * in reading order, without those inside a longer one (ordered_hits, as
 * ruleset.ordered_hit_keys), built here from the hits of each pattern (Scan.pid_hits, also
 * here), and the pairs of its NEARs (near_pairs). The tests, exclusions, conditions and
 * other hit statements are the code Engine's codegen writes beside its Python (eval_node,
 * run_hits); a rule whose hits need what only Python does (a NEAR with a regex, texts that do
 * not line up) goes to ``fallback(index)`` (Engine._match_one), which is also the reference
 * for what this builds. */

typedef struct {
    long mask;
    const int32_t *pids;
    Py_ssize_t npids;
} Group;

typedef struct {
    int32_t condition; /* where the AND's test starts in the code */
    Group *groups;
    Py_ssize_t ngroups;
} Guard;

typedef struct {
    Group *free;
    Py_ssize_t nfree;
    Guard *guards;
    Py_ssize_t nguards;
    PyObject *rule_id, *version;
    int32_t test;       /* where the query's test starts in the code, -1: the clauses decide */
    int32_t *excludes;  /* where each exclusion's test starts */
    Py_ssize_t nexcludes;
    int32_t hits;       /* where its other hit statements start (NEAR pairs…), or -1 */
    PyObject *tracked;  /* frozenset: the track list's canonical names */
} Program;

/* The code of the tests and hit statements (engine.py writes it, see _OP_ANY there): each
 * node is [op, size, …], size its length in ints with the header. */
enum {
    OP_ANY = 1,   /* [op, size, field mask, sid…]: one of the searches is in one of the fields */
    OP_AND = 2,   /* [op, size, node…] */
    OP_OR = 3,    /* [op, size, node…] */
    OP_NOT = 4,   /* [op, size, node] */
    OP_NEAR = 5,  /* [op, size, constant]: Engine.near(constant, scan, None) */
    OP_CALL = 6,  /* [op, size, constant]: constant(scan) */
    ST_GROUP = 7, /* [op, size, field mask, pid…]: the group's hits */
    ST_NEAR = 8,  /* [op, size, constant, n, pid… (n on the left), pid… (on the right)] */
    ST_IF = 9,    /* [op, size, node, statement…] */
    ST_ALL = 10,  /* [op, size, statement…]: a rule's hit statements */
};

typedef struct Near Near;
static PyTypeObject NearType;

/* A query, or the n-th exclusion of every rule: the slots of its clauses, the slot of its
 * negated terms, and per rule whether it belongs (members) and whether the clauses decide
 * it (exact). */
typedef struct {
    int32_t *slots;
    Py_ssize_t nslots;
    Py_ssize_t neg;
    uint8_t *members, *exact;
    uint64_t need, negated; /* the slots and the negated slot as bits of a rule's word */
} Layer;

typedef struct {
    PyObject_HEAD
    Py_ssize_t stride; /* the engine's: slot s of rule i is bit i × stride + s of its accumulator */
    int shift;         /* here rule i's slots start at bit i << shift (1 << shift ≥ stride) */
    Program *programs;
    Py_ssize_t nprograms;
    Py_ssize_t nsids;
    int32_t *pid_sid;
    PyObject **pid_label;
    Py_ssize_t npids;
    uint8_t *sid_casefold;
    PyObject *field_names; /* tuple: TEXT_FIELDS */
    PyTypeObject *match_type, *hit_type;
    Py_ssize_t match_offsets[3]; /* the slots rule_id, rule_version, hits */
    Py_ssize_t hit_offsets[4];   /* field, start, end, term */
    Py_ssize_t nwords;           /* of the accumulator: rules << shift bits, in words */
    uint64_t *init;              /* the accumulator before any search is found */
    uint64_t *always;            /* bit per rule: its query has no clause (its test decides) */
    /* What finding each search does, packed (one place in memory a search, not five):
     * searches[search_at[sid]:] = npids, pid…, ncontributions, and for each contribution
     * its field mask, npositions, and the positions (in this accumulator's layout). */
    int32_t *searches;
    int32_t *search_at;
    Layer query;
    Layer *layers;
    Py_ssize_t nlayers;
    int32_t *code;        /* the tests and hit statements */
    Py_ssize_t ncode;
    PyObject *constants;  /* tuple: the code's constants (NEAR specs, feed:/lang: tests) */
    PyObject *near;       /* Near: NEAR decided here */
    PyObject *near_python; /* Engine._near_python(spec, scan, None): the cases Near leaves */
    int cleared; /* by the garbage collector (Matcher_clear) */
} Matcher;

static void groups_free(Group *groups, Py_ssize_t n) {
    if (!groups) return;
    for (Py_ssize_t i = 0; i < n; i++) PyMem_Free((int32_t *)groups[i].pids);
    PyMem_Free(groups);
}

static void layer_free(Layer *layer) {
    PyMem_Free(layer->slots);
    PyMem_Free(layer->members);
    PyMem_Free(layer->exact);
}

/* The Matcher holds the Engine's _near_python, a bound method of the Engine that holds the
 * Matcher: a cycle, which the garbage collector must be able to see through (or every rule
 * set replaced by a reload would stay in memory). */
static int Matcher_traverse(Matcher *self, visitproc visit, void *arg) {
    if (self->programs) {
        for (Py_ssize_t i = 0; i < self->nprograms; i++) {
            Program *p = &self->programs[i];
            Py_VISIT(p->rule_id);
            Py_VISIT(p->version);
            Py_VISIT(p->tracked);
        }
    }
    Py_VISIT(self->field_names);
    Py_VISIT(self->match_type);
    Py_VISIT(self->hit_type);
    Py_VISIT(self->constants);
    Py_VISIT(self->near);
    Py_VISIT(self->near_python);
    return 0;
}

/* Break the cycle: drop the callables (a cleared Matcher refuses to match). */
static int Matcher_clear(Matcher *self) {
    Py_CLEAR(self->constants);
    Py_CLEAR(self->near);
    Py_CLEAR(self->near_python);
    self->cleared = 1;
    return 0;
}

static void Matcher_dealloc(Matcher *self) {
    PyObject_GC_UnTrack(self);
    if (self->programs) {
        for (Py_ssize_t i = 0; i < self->nprograms; i++) {
            Program *p = &self->programs[i];
            groups_free(p->free, p->nfree);
            if (p->guards) {
                for (Py_ssize_t k = 0; k < p->nguards; k++)
                    groups_free(p->guards[k].groups, p->guards[k].ngroups);
                PyMem_Free(p->guards);
            }
            PyMem_Free(p->excludes);
            Py_XDECREF(p->rule_id);
            Py_XDECREF(p->version);
            Py_XDECREF(p->tracked);
        }
        PyMem_Free(self->programs);
    }
    layer_free(&self->query);
    if (self->layers) {
        for (Py_ssize_t i = 0; i < self->nlayers; i++) layer_free(&self->layers[i]);
        PyMem_Free(self->layers);
    }
    PyMem_Free(self->searches);
    PyMem_Free(self->search_at);
    PyMem_Free(self->pid_sid);
    PyMem_Free(self->sid_casefold);
    PyMem_Free(self->init);
    PyMem_Free(self->always);
    PyMem_Free(self->code);
    Py_XDECREF(self->constants);
    Py_XDECREF(self->near);
    Py_XDECREF(self->near_python);
    Py_XDECREF(self->field_names);
    Py_XDECREF(self->match_type);
    Py_XDECREF(self->hit_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* The offsets of the slots of a frozen, slotted class with exactly these fields, set
 * directly as the dataclass's __init__ would (no __post_init__: engine.py checks). */
static int slot_offsets(PyTypeObject *type, const char **names, int n, Py_ssize_t *out) {
    if (type->tp_basicsize != (Py_ssize_t)sizeof(PyObject) + n * (Py_ssize_t)sizeof(PyObject *)) {
        PyErr_Format(PyExc_TypeError, "%s must have exactly %d slots", type->tp_name, n);
        return -1;
    }
    for (int i = 0; i < n; i++) {
        PyObject *descr = PyDict_GetItemString(type->tp_dict, names[i]);
        if (!descr || !Py_IS_TYPE(descr, &PyMemberDescr_Type) ||
            ((PyMemberDescrObject *)descr)->d_member->type != T_OBJECT_EX) {
            PyErr_Format(PyExc_TypeError, "%s.%s is not a slot", type->tp_name, names[i]);
            return -1;
        }
        out[i] = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    return 0;
}

static PyObject *new_object(PyTypeObject *type, const Py_ssize_t *offsets, PyObject **values,
                            int n) {
    PyObject *obj = type->tp_alloc(type, 0);
    if (!obj) return NULL;
    for (int i = 0; i < n; i++) {
        Py_INCREF(values[i]);
        *(PyObject **)((char *)obj + offsets[i]) = values[i];
    }
    return obj;
}

/* A sequence of ints in [0, limit) as a C array (with a -1 after the last if terminated). */
static int32_t *int_array(PyObject *seq, Py_ssize_t *len, int terminated, Py_ssize_t limit) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of ints");
    if (!fast) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    int32_t *out = PyMem_Calloc((size_t)(n + 1), sizeof(int32_t));
    if (!out) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long v = PyLong_AsLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            PyMem_Free(out);
            return NULL;
        }
        if (v < 0 || v >= limit || v > INT32_MAX) {
            Py_DECREF(fast);
            PyMem_Free(out);
            PyErr_Format(PyExc_ValueError, "%ld is not in [0, %zd)", v, limit);
            return NULL;
        }
        out[i] = (int32_t)v;
    }
    if (terminated) out[n] = -1;
    Py_DECREF(fast);
    if (len) *len = n;
    return out;
}

static int bytes_copy(PyObject *obj, Py_ssize_t len, uint8_t **out) {
    char *buf;
    Py_ssize_t n;
    if (PyBytes_AsStringAndSize(obj, &buf, &n) < 0) return -1;
    if (n != len) {
        PyErr_Format(PyExc_ValueError, "expected %zd bytes, got %zd", len, n);
        return -1;
    }
    *out = PyMem_Malloc((size_t)(len ? len : 1));
    if (!*out) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(*out, buf, (size_t)len);
    return 0;
}

/* [(field mask, pids)] as groups. */
static Group *groups_init(Matcher *self, PyObject *seq, Py_ssize_t *n) {
    PyObject *fast = PySequence_Fast(seq, "groups: expected a sequence");
    if (!fast) return NULL;
    *n = PySequence_Fast_GET_SIZE(fast);
    Group *groups = PyMem_Calloc((size_t)(*n ? *n : 1), sizeof(Group));
    if (!groups) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *pids;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, i), "lO", &groups[i].mask, &pids) ||
            !(groups[i].pids = int_array(pids, &groups[i].npids, 0, self->npids))) {
            Py_DECREF(fast);
            groups_free(groups, *n);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return groups;
}

/* Whether the node at ``node`` (a test, or a statement when ``statement``) is well formed
 * and ends by ``end``: 0, or -1 with ValueError. */
static int check_node(const Matcher *self, const int32_t *node, const int32_t *end,
                      int statement, int depth) {
    if (depth > 1000 || end - node < 2 || node[1] < 2 || node[1] > end - node) goto bad;
    const int32_t *stop = node + node[1], *k;
    Py_ssize_t size = node[1], nconstants = PyTuple_GET_SIZE(self->constants);
    if (statement != (node[0] >= ST_GROUP)) goto bad;
    switch (node[0]) {
    case OP_ANY:
    case ST_GROUP:
        if (size < 3) goto bad;
        for (k = node + 3; k < stop; k++)
            if (*k < 0 || *k >= (node[0] == OP_ANY ? self->nsids : self->npids)) goto bad;
        return 0;
    case OP_AND:
    case OP_OR:
    case ST_ALL:
        for (k = node + 2; k < stop; k += k[1])
            if (check_node(self, k, stop, node[0] == ST_ALL, depth + 1) < 0) return -1;
        return 0;
    case OP_NOT:
        if (size < 3) goto bad;
        if (check_node(self, node + 2, stop, 0, depth + 1) < 0) return -1;
        if (node[3] != size - 2) goto bad;
        return 0;
    case OP_NEAR:
    case OP_CALL:
        if (size != 3 || node[2] < 0 || node[2] >= nconstants) goto bad;
        return 0;
    case ST_NEAR:
        if (size < 4 || node[2] < 0 || node[2] >= nconstants || node[3] < 0 || node[3] > size - 4)
            goto bad;
        for (k = node + 4; k < stop; k++)
            if (*k < 0 || *k >= self->npids) goto bad;
        return 0;
    case ST_IF:
        if (size < 3) goto bad;
        if (check_node(self, node + 2, stop, 0, depth + 1) < 0) return -1;
        for (k = node + 2 + node[3]; k < stop; k += k[1])
            if (check_node(self, k, stop, 1, depth + 1) < 0) return -1;
        return 0;
    }
bad:
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "code: a malformed node");
    return -1;
}

/* A program's start in the code (or -1 when allowed), checked. */
static int code_start(const Matcher *self, PyObject *obj, int statement, int optional,
                      int32_t *out) {
    long at = PyLong_AsLong(obj);
    if (at == -1 && PyErr_Occurred()) return -1;
    if (at == -1 && optional) {
        *out = -1;
        return 0;
    }
    if (at < 0 || at >= self->ncode) {
        PyErr_SetString(PyExc_ValueError, "code: a start out of range");
        return -1;
    }
    const int32_t *node = self->code + at;
    if (check_node(self, node, self->code + self->ncode, statement, 0) < 0) return -1;
    if (statement && node[0] != ST_ALL) {
        PyErr_SetString(PyExc_ValueError, "code: hit statements must start with ST_ALL");
        return -1;
    }
    *out = (int32_t)at;
    return 0;
}

static int program_init(Matcher *self, Program *program, PyObject *spec) {
    PyObject *free, *guarded, *test, *excludes, *hits, *rule_id, *version, *tracked;
    if (!PyArg_ParseTuple(spec, "OOUUOOO!O", &free, &guarded, &rule_id, &version, &test,
                          &excludes, &PyFrozenSet_Type, &tracked, &hits))
        return -1;
    program->rule_id = Py_NewRef(rule_id);
    program->version = Py_NewRef(version);
    program->tracked = Py_NewRef(tracked);
    if (code_start(self, test, 0, 1, &program->test) < 0 ||
        code_start(self, hits, 1, 1, &program->hits) < 0)
        return -1;
    PyObject *fast = PySequence_Fast(excludes, "excludes: expected a sequence");
    if (!fast) return -1;
    program->nexcludes = PySequence_Fast_GET_SIZE(fast);
    program->excludes = PyMem_Calloc((size_t)(program->nexcludes + 1), sizeof(int32_t));
    if (!program->excludes) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t x = 0; x < program->nexcludes; x++) {
        if (code_start(self, PySequence_Fast_GET_ITEM(fast, x), 0, 0, &program->excludes[x]) < 0) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    if (!(program->free = groups_init(self, free, &program->nfree))) return -1;
    fast = PySequence_Fast(guarded, "guarded: expected a sequence");
    if (!fast) return -1;
    program->nguards = PySequence_Fast_GET_SIZE(fast);
    program->guards = PyMem_Calloc((size_t)(program->nguards ? program->nguards : 1),
                                   sizeof(Guard));
    if (!program->guards) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < program->nguards; k++) {
        Guard *guard = &program->guards[k];
        PyObject *condition, *groups;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(fast, k), "OO", &condition, &groups) ||
            code_start(self, condition, 0, 0, &guard->condition) < 0 ||
            !(guard->groups = groups_init(self, groups, &guard->ngroups))) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

static int layer_init(Matcher *self, Layer *layer, PyObject *spec) {
    PyObject *slots, *members, *exact;
    if (!PyArg_ParseTuple(spec, "OnSS", &slots, &layer->neg, &members, &exact)) return -1;
    if (!(layer->slots = int_array(slots, &layer->nslots, 0, self->stride))) return -1;
    if (layer->neg < 0 || layer->neg >= self->stride) {
        PyErr_SetString(PyExc_ValueError, "a slot beyond the stride");
        return -1;
    }
    if (bytes_copy(members, self->nprograms, &layer->members) < 0 ||
        bytes_copy(exact, self->nprograms, &layer->exact) < 0)
        return -1;
    if (self->stride <= 64) { /* for fires: a rule's slots are one word's low bits */
        for (Py_ssize_t j = 0; j < layer->nslots; j++) layer->need |= 1ULL << layer->slots[j];
        layer->negated = 1ULL << layer->neg;
    }
    return 0;
}

static inline int acc_bit(const uint64_t *acc, Py_ssize_t position) {
    return (acc[position >> 6] >> (position & 63)) & 1;
}

/* Matcher.searches from pids_of (sid → its pids) and contributions (sid → (field mask,
 * positions in the engine's layout), …), the positions laid out again with ``shift``. */
static int searches_init(Matcher *self, PyObject *pids_of, PyObject *contributions,
                         Py_ssize_t limit) {
    Py_ssize_t n = 0, cap = 0;
    self->search_at = PyMem_Malloc((size_t)(self->nsids ? self->nsids : 1) * sizeof(int32_t));
    if (!self->search_at) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t sid = 0; sid < self->nsids; sid++) {
        Py_ssize_t npids;
        int32_t *pids = int_array(PyList_GET_ITEM(pids_of, sid), &npids, 0, self->npids);
        PyObject *items = pids ? PySequence_Fast(PyList_GET_ITEM(contributions, sid),
                                                 "contributions: expected sequences") : NULL;
        if (!items || RESERVE(self->searches, cap, n + 2 + npids) < 0) {
            PyMem_Free(pids);
            Py_XDECREF(items);
            return -1;
        }
        self->search_at[sid] = (int32_t)n;
        self->searches[n++] = (int32_t)npids;
        memcpy(self->searches + n, pids, (size_t)npids * sizeof(int32_t));
        n += npids;
        PyMem_Free(pids);
        Py_ssize_t m = PySequence_Fast_GET_SIZE(items);
        self->searches[n++] = (int32_t)m;
        for (Py_ssize_t i = 0; i < m; i++) {
            long mask;
            PyObject *list;
            Py_ssize_t npositions;
            int32_t *positions = NULL;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(items, i), "lO", &mask, &list) ||
                !(positions = int_array(list, &npositions, 0, limit)) ||
                RESERVE(self->searches, cap, n + 2 + npositions) < 0) {
                PyMem_Free(positions);
                Py_DECREF(items);
                return -1;
            }
            self->searches[n++] = (int32_t)mask;
            self->searches[n++] = (int32_t)npositions;
            for (Py_ssize_t j = 0; j < npositions; j++) {
                int32_t p = positions[j];
                self->searches[n++] = (int32_t)(((p / self->stride) << self->shift) | (p % self->stride));
            }
            PyMem_Free(positions);
        }
        Py_DECREF(items);
        if (n > INT32_MAX) {
            PyErr_SetString(PyExc_ValueError, "too many rules for one matcher");
            return -1;
        }
    }
    return 0;
}

/* Matcher(stride, programs, pids_of, pid_sid, pid_label, sid_casefold, field_names,
 *         match_type, hit_type, init, contributions, query, layers)
 *   programs: by rule index, (native, free groups, guarded, rule id, version, test or None,
 *   exclusion tests), a group being (field mask, pids) and guarded [(condition, groups)];
 *   pids_of: by sid, its pids; pid_sid, pid_label: by pid; sid_casefold: by sid, whether
 *   it is searched in the case-folded text; field_names: TEXT_FIELDS; the Match and Hit
 *   classes; init: the accumulator's bytes before any search is found (rules × stride
 *   bits); contributions: by sid, [(field mask, positions)]; query and each exclusion
 *   layer: (slots, negated slot, members, exact) with one byte per rule. */
static int Matcher_init(Matcher *self, PyObject *args, PyObject *kwds) {
    Py_ssize_t stride;
    PyObject *programs, *pids_of, *pid_sid, *pid_label, *sid_casefold, *field_names, *init,
        *contributions, *query, *layers, *code, *constants, *near, *near_python;
    PyTypeObject *match_type, *hit_type;
    static char *kwlist[] = {"stride", "programs", "pids_of", "pid_sid", "pid_label",
                             "sid_casefold", "field_names", "match_type", "hit_type", "init",
                             "contributions", "query", "layers", "code", "constants", "near",
                             "near_python", NULL};
    if (!PyArg_ParseTupleAndKeywords(
            args, kwds, "nO!O!OO!OO!O!O!SO!OO!OOO!O", kwlist, &stride, &PyList_Type, &programs,
            &PyList_Type, &pids_of, &pid_sid, &PyList_Type, &pid_label, &sid_casefold,
            &PyTuple_Type, &field_names, &PyType_Type, &match_type, &PyType_Type, &hit_type,
            &init, &PyList_Type, &contributions, &query, &PyList_Type, &layers, &code,
            &constants, &NearType, &near, &near_python))
        return -1;
    if (!PyCallable_Check(near_python)) {
        PyErr_SetString(PyExc_TypeError, "near_python: expected a callable");
        return -1;
    }
    if (self->programs) {
        PyErr_SetString(PyExc_RuntimeError, "Matcher is already initialised");
        return -1;
    }
    if (stride <= 0 || stride > 1 << 20) {
        PyErr_SetString(PyExc_ValueError, "stride out of range");
        return -1;
    }
    if (PyTuple_GET_SIZE(field_names) > 8) {
        PyErr_SetString(PyExc_ValueError, "at most 8 fields");
        return -1;
    }
    self->stride = stride;
    const char *match_names[3] = {"rule_id", "rule_version", "hits"};
    const char *hit_names[4] = {"field", "start", "end", "term"};
    if (slot_offsets(match_type, match_names, 3, self->match_offsets) < 0 ||
        slot_offsets(hit_type, hit_names, 4, self->hit_offsets) < 0)
        return -1;
    Py_INCREF(match_type);
    self->match_type = match_type;
    Py_INCREF(hit_type);
    self->hit_type = hit_type;
    Py_INCREF(field_names);
    self->field_names = field_names;
    /* pids and searches first: the programs refer to them */
    self->nsids = PyList_GET_SIZE(pids_of);
    self->npids = PyList_GET_SIZE(pid_label);
    if (!(self->pid_sid = int_array(pid_sid, NULL, 0, self->nsids))) return -1;
    if (PySequence_Size(pid_sid) != self->npids) {
        PyErr_SetString(PyExc_ValueError, "pid_label and pid_sid differ in length");
        return -1;
    }
    self->pid_label = PyMem_Calloc((size_t)(self->npids ? self->npids : 1), sizeof(PyObject *));
    self->sid_casefold = PyMem_Calloc((size_t)(self->nsids ? self->nsids : 1), 1);
    if (!self->pid_label || !self->sid_casefold) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t pid = 0; pid < self->npids; pid++) {
        PyObject *label = PyList_GET_ITEM(pid_label, pid);
        if (!PyUnicode_Check(label)) {
            PyErr_SetString(PyExc_TypeError, "pid_label: expected str");
            return -1;
        }
        Py_INCREF(label);
        self->pid_label[pid] = label;
    }
    PyObject *casefold = PySequence_Fast(sid_casefold, "sid_casefold: expected a sequence");
    if (!casefold) return -1;
    int bad = PySequence_Fast_GET_SIZE(casefold) != self->nsids ||
              PyList_GET_SIZE(contributions) != self->nsids;
    for (Py_ssize_t sid = 0; sid < self->nsids && !bad; sid++) {
        int truth = PyObject_IsTrue(PySequence_Fast_GET_ITEM(casefold, sid));
        if (truth < 0) {
            Py_DECREF(casefold);
            return -1;
        }
        self->sid_casefold[sid] = (uint8_t)truth;
    }
    Py_DECREF(casefold);
    if (bad) {
        PyErr_SetString(PyExc_ValueError, "sid_casefold, contributions and pids_of differ in length");
        return -1;
    }
    /* the code, before the programs that point into it */
    if (!(self->constants = PySequence_Tuple(constants))) return -1;
    self->near = Py_NewRef(near);
    self->near_python = Py_NewRef(near_python);
    if (!(self->code = int_array(code, &self->ncode, 0, INT32_MAX))) {
        /* the code holds negative-free ints only: ops, sizes, masks, ids */
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(programs);
    self->programs = PyMem_Calloc((size_t)(n ? n : 1), sizeof(Program));
    if (!self->programs) {
        PyErr_NoMemory();
        return -1;
    }
    self->nprograms = n;
    for (Py_ssize_t i = 0; i < n; i++)
        if (program_init(self, &self->programs[i], PyList_GET_ITEM(programs, i)) < 0) return -1;
    /* deciding: the engine's accumulator laid out again with a power of two per rule, so
     * that a position's rule is a shift away */
    Py_ssize_t limit = n * stride;
    while (((Py_ssize_t)1 << self->shift) < stride) self->shift++;
    uint8_t *given;
    if (bytes_copy(init, (limit + 7) / 8, &given) < 0) return -1;
    self->nwords = ((n << self->shift) + 63) / 64;
    self->init = PyMem_Calloc((size_t)(self->nwords ? self->nwords : 1), sizeof(uint64_t));
    if (!self->init) {
        PyMem_Free(given);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t p = 0; p < limit; p++) {
        if (!((given[p >> 3] >> (p & 7)) & 1)) continue;
        Py_ssize_t q = ((p / stride) << self->shift) | (p % stride);
        self->init[q >> 6] |= 1ULL << (q & 63);
    }
    PyMem_Free(given);
    if (((n + 1) << self->shift) > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "too many rules for one matcher");
        return -1;
    }
    if (searches_init(self, pids_of, contributions, limit) < 0) return -1;
    if (layer_init(self, &self->query, query) < 0) return -1;
    self->nlayers = PyList_GET_SIZE(layers);
    self->layers = PyMem_Calloc((size_t)(self->nlayers ? self->nlayers : 1), sizeof(Layer));
    if (!self->layers) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->nlayers; i++)
        if (layer_init(self, &self->layers[i], PyList_GET_ITEM(layers, i)) < 0) return -1;
    /* A rule can match with no search found only when every slot of its query is set
     * beforehand (no clause: its test decides); every other needs a contribution. */
    self->always = PyMem_Calloc((size_t)(n / 64 + 1), sizeof(uint64_t));
    if (!self->always) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int all = 1;
        for (Py_ssize_t j = 0; j < self->query.nslots && all; j++)
            all = acc_bit(self->init, (i << self->shift) + self->query.slots[j]);
        if (all) self->always[i >> 6] |= 1ULL << (i & 63);
        if (!self->query.exact[i] && self->programs[i].test < 0) {
            PyErr_Format(PyExc_ValueError, "rule %zd: not decided by its clauses, and no test", i);
            return -1;
        }
    }
    return 0;
}

typedef struct {
    long fi, start, end;
    PyObject *label; /* borrowed from the Matcher's pid_label */
    PyObject *hit;   /* borrowed from its pattern's hits tuple, which the call keeps */
} Item;

/* A pattern's hits in every field it was found in (Scan.pid_hits), kept for one call. */
typedef struct {
    int32_t pid;
    int clean;          /* in reading order, none overlapping the one before */
    Py_ssize_t first, count; /* its items: Call.items[first:first + count] */
    PyObject *hits;     /* tuple of Hit */
} PidHits;

/* A search found, and the fields it was found in (scan.fields_of), in Call.found. */
typedef struct {
    int32_t sid; /* -1: an empty slot */
    int32_t fields;
} FoundSearch;

enum { FOUND_INLINE = 128 };

/* One call's view of a Scan (references kept for the call). */
typedef struct {
    Matcher *self;
    PyObject *scan;
    PyObject *norms;
    PyObject *spans;     /* scan._found: Occurrences */
    FoundSearch *found;  /* scan.fields_of as an open-addressed table, by sid */
    Py_ssize_t found_mask; /* its size - 1 (a power of two) */
    FoundSearch found_inline[FOUND_INLINE];
    uint8_t *present;    /* the pids found, as bits */
    long shift[8][2];    /* per field and case: the constant shift to the original text, */
    uint8_t known[8][2]; /* 1 when computed, 2 when the text is not one linear piece */
    PidHits *pid_hits;   /* computed so far, found by pid through ``slots`` (index + 1) */
    Py_ssize_t npid_hits, pid_hits_cap;
    int32_t *slots;
    Py_ssize_t nslots;
    Item *items;
    Py_ssize_t nitems, items_cap;
    /* near_text's answers, per field and spec->casefold (False, True, None): 0 not asked
     * yet, else its result (1 with the text, 2); the texts are references the call keeps */
    int8_t near_state[8][3];
    PyObject *near_text[8][3];
} Call;

/* getattr(obj, name) with the name's str made once (interned), not on every call. */
static PyObject *attr(PyObject *obj, const char *name) {
    static const char *keys[32];
    static PyObject *names[32];
    static int n;
    for (int i = 0; i < n; i++)
        if (keys[i] == name) return PyObject_GetAttr(obj, names[i]);
    if (n == 32) return PyObject_GetAttrString(obj, name);
    PyObject *interned = PyUnicode_InternFromString(name);
    if (!interned) return NULL;
    keys[n] = name;
    names[n++] = interned; /* kept for the life of the process */
    return PyObject_GetAttr(obj, interned);
}

static PyObject *get_slot(PyObject *scan, const char *name, PyTypeObject *type) {
    PyObject *value = attr(scan, name);
    if (value && !Py_IS_TYPE(value, type)) {
        PyErr_Format(PyExc_TypeError, "scan.%s: expected %s", name, type->tp_name);
        Py_CLEAR(value);
    }
    return value;
}

static inline Py_ssize_t found_slot(const Call *c, int32_t sid) {
    return id_slot((uint32_t)sid, c->found_mask + 1);
}

/* The fields search ``sid`` was found in (scan.fields_of.get(sid, 0)). */
static inline long found_fields(const Call *c, int32_t sid) {
    for (Py_ssize_t i = found_slot(c, sid);; i = (i + 1) & c->found_mask) {
        const FoundSearch *f = &c->found[i];
        if (f->sid == sid) return f->fields;
        if (f->sid < 0) return 0;
    }
}

static int call_open(Call *c, Matcher *self, PyObject *scan) {
    memset(c, 0, offsetof(Call, found_inline));
    memset(&c->present, 0, sizeof(*c) - offsetof(Call, present));
    c->self = self;
    c->scan = scan;
    c->present = PyMem_Calloc((size_t)(self->npids / 8 + 1), 1);
    if (!c->present) {
        PyErr_NoMemory();
        return -1;
    }
    if (!(c->spans = get_slot(scan, "_found", &OccurrencesType)) ||
        !(c->norms = get_slot(scan, "norms", &PyDict_Type)))
        return -1;
    const Occurrences *occurrences = (const Occurrences *)c->spans;
    Py_ssize_t size = 16;
    while (size < 2 * occurrences->nlists) size *= 2;
    c->found = size <= FOUND_INLINE ? c->found_inline : PyMem_Malloc((size_t)size * sizeof(FoundSearch));
    if (!c->found) {
        PyErr_NoMemory();
        return -1;
    }
    c->found_mask = size - 1;
    memset(c->found, 0xff, (size_t)size * sizeof(FoundSearch)); /* every sid -1 */
    /* Scan.fields_of, from the occurrences' keys (sid << 3 | field) */
    for (Py_ssize_t k = 0; k < occurrences->nlists; k++) {
        const OccList *list = &occurrences->lists[k];
        if (!list->n) continue;
        long sid = list->key >> 3;
        if (sid < 0 || sid >= self->nsids) {
            PyErr_SetString(PyExc_ValueError, "occurrences: no such search");
            return -1;
        }
        Py_ssize_t i = found_slot(c, (int32_t)sid);
        while (c->found[i].sid >= 0 && c->found[i].sid != sid) i = (i + 1) & c->found_mask;
        c->found[i].sid = (int32_t)sid;
        c->found[i].fields = (c->found[i].fields < 0 ? 0 : c->found[i].fields) | (1 << (list->key & 7));
    }
    return 0;
}

static void call_close(Call *c) {
    for (int fi = 0; fi < 8; fi++)
        for (int k = 0; k < 3; k++) Py_XDECREF(c->near_text[fi][k]);
    if (c->found != c->found_inline) PyMem_Free(c->found);
    Py_XDECREF(c->spans);
    Py_XDECREF(c->norms);
    PyMem_Free(c->present);
    for (Py_ssize_t i = 0; i < c->npid_hits; i++) Py_XDECREF(c->pid_hits[i].hits);
    PyMem_Free(c->pid_hits);
    PyMem_Free(c->slots);
    PyMem_Free(c->items);
}

static long field_mask(Call *c, int32_t sid) {
    long fields = found_fields(c, sid);
    if (!fields) {
        PyErr_SetString(PyExc_KeyError, "a pattern found of a search not found");
        return -1;
    }
    return fields;
}

/* Whether field fi's text (folded or exact) maps one to one onto the original, with a
 * constant shift (Scan.original's common case): 1 and the shift, 0, or -1 on error. */
static int linear_shift(Call *c, int fi, int casefold, long *shift) {
    if (!c->known[fi][casefold]) {
        PyObject *key = Py_BuildValue("(iO)", fi, casefold ? Py_True : Py_False);
        if (!key) return -1;
        PyObject *norm = PyDict_GetItemWithError(c->norms, key); /* borrowed */
        Py_DECREF(key);
        if (!norm) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "a field not normalised");
            return -1;
        }
        PyObject *starts = attr(norm, "piece_starts");
        PyObject *spans = starts ? attr(norm, "piece_spans") : NULL;
        PyObject *origins = spans ? attr(norm, "piece_origins") : NULL;
        int rc = origins ? 0 : -1;
        c->known[fi][casefold] = 2;
        if (origins && PyTuple_Check(starts) && PyTuple_Check(spans) && PyTuple_Check(origins) &&
            PyTuple_GET_SIZE(starts) == 1 && PyTuple_GET_SIZE(spans) == 1 &&
            PyTuple_GET_ITEM(spans, 0) == Py_None && PyTuple_GET_SIZE(origins) == 1) {
            c->shift[fi][casefold] = PyLong_AsLong(PyTuple_GET_ITEM(origins, 0));
            if (c->shift[fi][casefold] == -1 && PyErr_Occurred()) rc = -1;
            else c->known[fi][casefold] = 1;
        }
        Py_XDECREF(starts);
        Py_XDECREF(spans);
        Py_XDECREF(origins);
        if (rc < 0) {
            c->known[fi][casefold] = 0;
            return -1;
        }
    }
    *shift = c->shift[fi][casefold];
    return c->known[fi][casefold] == 1;
}

static inline int long_item(PyObject *tuple, Py_ssize_t i, long *out) {
    if (!PyTuple_Check(tuple) || PyTuple_GET_SIZE(tuple) <= i) {
        PyErr_SetString(PyExc_TypeError, "expected a longer tuple");
        return -1;
    }
    *out = PyLong_AsLong(PyTuple_GET_ITEM(tuple, i));
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

/* Scan.pid_hits, compiled: the hits of pattern ``pid`` in every field its search was found
 * in, in reading order, kept for the call (in C: the Python fallback computes its own). */
static Py_ssize_t pid_hits_slot(const void *items, Py_ssize_t i, Py_ssize_t nslots) {
    return id_slot((uint32_t)((const PidHits *)items)[i].pid, nslots);
}

static PidHits *pid_hits(Call *c, int32_t pid) {
    Matcher *self = c->self;
    if (index_reserve(&c->slots, &c->nslots, c->pid_hits, c->npid_hits, pid_hits_slot) < 0)
        return NULL;
    Py_ssize_t slot = id_slot((uint32_t)pid, c->nslots);
    while (c->slots[slot]) {
        PidHits *seen = &c->pid_hits[c->slots[slot] - 1];
        if (seen->pid == pid) return seen;
        slot = (slot + 1) & (c->nslots - 1);
    }
    if (RESERVE(c->pid_hits, c->pid_hits_cap, c->npid_hits + 1) < 0) return NULL;
    int32_t sid = self->pid_sid[pid];
    PyObject *label = self->pid_label[pid];
    long fields = field_mask(c, sid);
    if (fields == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t first = c->nitems;
    /* The spans in each field's normalised text (shifted to the original), or, when the text
     * does not map one to one, Scan.original's list, mapped piece by piece: counted first,
     * so that the hits go straight into their tuple. */
    const OccList *occs[8] = {NULL};
    PyObject *lists[8] = {NULL};
    long shifts[8] = {0};
    Py_ssize_t total = 0;
    PyObject *hits = NULL;
    int nfields = (int)PyTuple_GET_SIZE(self->field_names);
    for (int fi = 0; fi < nfields; fi++) {
        if (!((fields >> fi) & 1)) continue;
        int linear = linear_shift(c, fi, self->sid_casefold[sid], &shifts[fi]);
        if (linear < 0) goto fail;
        if (linear) {
            if (!(occs[fi] = occ_find((Occurrences *)c->spans, ((long)sid << 3) | fi))) {
                PyErr_SetString(PyExc_KeyError, "a search found with no spans");
                goto fail;
            }
            total += occs[fi]->n;
        } else {
            shifts[fi] = 0;
            lists[fi] = PyObject_CallMethod(c->scan, "original", "l", ((long)sid << 3) | fi);
            if (!lists[fi]) goto fail;
            if (!PyList_Check(lists[fi])) {
                PyErr_SetString(PyExc_TypeError, "spans: expected lists");
                goto fail;
            }
            total += PyList_GET_SIZE(lists[fi]);
        }
    }
    if (RESERVE(c->items, c->items_cap, c->nitems + total) < 0) goto fail;
    if (!(hits = PyTuple_New(total))) goto fail;
    int clean = 1;
    long last_fi = -1, last_end = 0;
    Py_ssize_t made = 0;
    for (int fi = 0; fi < nfields; fi++) {
        if (!((fields >> fi) & 1)) continue;
        const OccList *occ = occs[fi];
        Py_ssize_t count = occ ? occ->n : PyList_GET_SIZE(lists[fi]);
        PyObject *field_name = PyTuple_GET_ITEM(self->field_names, fi);
        for (Py_ssize_t i = 0; i < count && made < total; i++) {
            long start, end;
            if (occ) {
                start = (long)occ->spans[i].start;
                end = (long)occ->spans[i].end;
            } else {
                PyObject *span = PyList_GET_ITEM(lists[fi], i);
                if (long_item(span, 0, &start) < 0 || long_item(span, 1, &end) < 0) goto fail;
            }
            start += shifts[fi];
            end += shifts[fi];
            PyObject *s_obj = PyLong_FromLong(start), *e_obj = PyLong_FromLong(end), *hit = NULL;
            if (s_obj && e_obj) {
                PyObject *values[4] = {field_name, s_obj, e_obj, label};
                hit = new_object(self->hit_type, self->hit_offsets, values, 4);
            }
            Py_XDECREF(s_obj);
            Py_XDECREF(e_obj);
            if (!hit) goto fail;
            PyTuple_SET_ITEM(hits, made++, hit); /* the tuple holds it; the item borrows it */
            c->items[c->nitems++] = (Item){fi, start, end, label, hit};
            if (fi == last_fi && start < last_end) clean = 0;
            last_fi = fi;
            last_end = end;
        }
    }
    if (made != total) {
        PyErr_SetString(PyExc_RuntimeError, "Scan.original changed a list it returned");
        goto fail;
    }
    for (int fi = 0; fi < 8; fi++) Py_XDECREF(lists[fi]);
    PidHits *entry = &c->pid_hits[c->npid_hits];
    *entry = (PidHits){pid, clean || c->nitems - first == 1, first, c->nitems - first, hits};
    c->slots[slot] = (int32_t)(++c->npid_hits);
    return entry;
fail:
    for (int fi = 0; fi < 8; fi++) Py_XDECREF(lists[fi]);
    Py_XDECREF(hits);
    c->nitems = first;
    return NULL;
}

typedef struct {
    Item *items;
    Py_ssize_t n, cap;
    PyObject *single; /* the one pid's hits, when they are all the hits */
    Py_ssize_t pids;  /* pids collected */
    int filtered;     /* some occurrence was outside its group's fields */
} Hits;


static int label_order(PyObject *a, PyObject *b) {
    return a == b ? 0 : PyUnicode_Compare(a, b); /* str against str: no error */
}

/* (field, start, end, term): the order of unique hits */
static int key_order(const void *a, const void *b) {
    const Item *x = a, *y = b;
    if (x->fi != y->fi) return x->fi < y->fi ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return label_order(x->label, y->label);
}

/* (field, start, -end, term): ruleset._longest_first, over indexes into the unique hits */
static const Item *order_base;
static int longest_first(const void *a, const void *b) {
    const Item *x = &order_base[*(const Py_ssize_t *)a], *y = &order_base[*(const Py_ssize_t *)b];
    if (x->fi != y->fi) return x->fi < y->fi ? -1 : 1;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    if (x->end != y->end) return x->end > y->end ? -1 : 1;
    return label_order(x->label, y->label);
}

/* ruleset._uncovered: mark the hits of ``order`` not strictly inside an earlier, larger span
 * of the same field. */
static void uncovered(const Item *items, const Py_ssize_t *order, Py_ssize_t n, uint8_t *kept) {
    long field = -1, reach = -1, group_reach = -1, span_start = -1, span_end = -1;
    for (Py_ssize_t k = 0; k < n; k++) {
        const Item *it = &items[order[k]];
        if (it->fi != field) {
            field = it->fi;
            reach = group_reach = -1;
            span_start = span_end = -1;
        }
        if (it->start != span_start || it->end != span_end) {
            if (group_reach > reach) reach = group_reach;
            group_reach = -1;
            span_start = it->start;
            span_end = it->end;
        }
        if (reach < it->end) kept[order[k]] = 1;
        if (it->end > group_reach) group_reach = it->end;
    }
}

/* ruleset.ordered_hit_keys for hits that overlap: unique, in reading order, without those
 * inside a longer one (a tracked-list hit is dropped only inside another tracked one).
 * ``items`` are sorted by key_order. A new reference to the tuple of their Hits. */
static PyObject *ordered_hits(Item *items, Py_ssize_t n, PyObject *tracked) {
    Py_ssize_t unique = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!unique || key_order(&items[unique - 1], &items[i])) items[unique++] = items[i];
    n = unique;
    Py_ssize_t *order = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_ssize_t));
    uint8_t *kept = PyMem_Calloc((size_t)(n ? n : 1), 1);
    uint8_t *on_list = PyMem_Calloc((size_t)(n ? n : 1), 1);
    PyObject *out = NULL;
    if (!order || !kept || !on_list) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t listed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        order[i] = i;
        int in = tracked != Py_None && PySet_GET_SIZE(tracked) ? PySet_Contains(tracked, items[i].label) : 0;
        if (in < 0) goto done;
        on_list[i] = (uint8_t)in;
        listed += in;
    }
    order_base = items; /* the GIL is held: no other thread sorts meanwhile */
    qsort(order, (size_t)n, sizeof(Py_ssize_t), longest_first);
    if (!listed) {
        uncovered(items, order, n, kept);
    } else {
        /* plain: uncovered among all, keeping those not on the list; on the list: uncovered
         * among the listed ones only */
        uint8_t *all = PyMem_Calloc((size_t)n, 1);
        Py_ssize_t *sub = PyMem_Malloc((size_t)n * sizeof(Py_ssize_t));
        if (!all || !sub) {
            PyMem_Free(all);
            PyMem_Free(sub);
            PyErr_NoMemory();
            goto done;
        }
        uncovered(items, order, n, all);
        Py_ssize_t m = 0;
        for (Py_ssize_t k = 0; k < n; k++)
            if (on_list[order[k]]) sub[m++] = order[k];
        uncovered(items, sub, m, kept);
        for (Py_ssize_t i = 0; i < n; i++)
            if (all[i] && !on_list[i]) kept[i] = 1;
        PyMem_Free(all);
        PyMem_Free(sub);
    }
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) count += kept[i];
    if (!(out = PyTuple_New(count))) goto done;
    for (Py_ssize_t i = 0, j = 0; i < n; i++)
        if (kept[i]) PyTuple_SET_ITEM(out, j++, Py_NewRef(items[i].hit));
done:
    PyMem_Free(order);
    PyMem_Free(kept);
    PyMem_Free(on_list);
    return out;
}

/* Add the occurrences of a group's patterns found, in its fields: 0, or -1. */
static int collect(Call *c, const Group *group, Hits *h) {
    for (Py_ssize_t j = 0; j < group->npids; j++) {
        int32_t pid = group->pids[j];
        if (!((c->present[pid >> 3] >> (pid & 7)) & 1)) continue;
        PidHits *entry = pid_hits(c, pid);
        if (!entry) return -1;
        if (!entry->clean) h->filtered = 1; /* not the pattern's hits as they are: sort them */
        h->pids++;
        h->single = entry->hits;
        if (RESERVE(h->items, h->cap, h->n + entry->count) < 0) return -1;
        for (Py_ssize_t i = 0; i < entry->count; i++) {
            const Item *item = &c->items[entry->first + i];
            if (!((group->mask >> item->fi) & 1)) {
                h->filtered = 1;
                continue;
            }
            h->items[h->n++] = *item;
        }
    }
    return 0;
}

static int near_decide_in(Near *self, PyObject *spec_obj, PyObject *fields_of, PyObject *spans,
                          PyObject *norms, Call *c);
static int near_pairs(Near *near, PyObject *spec_obj, Call *c, const int32_t *pids,
                      Py_ssize_t nleft, Py_ssize_t nright, Hits *h);

static int truth_of(PyObject *fn, PyObject *scan) {
    PyObject *r = PyObject_CallOneArg(fn, scan);
    if (!r) return -1;
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    return truth;
}

/* Whether the test at ``node`` holds: 1, 0, or -1. */
static int eval_node(Call *c, const int32_t *node) {
    Matcher *self = c->self;
    const int32_t *k, *end = node + node[1];
    int r;
    switch (node[0]) {
    case OP_ANY:
        for (k = node + 3; k < end; k++)
            if (found_fields(c, *k) & node[2]) return 1;
        return 0;
    case OP_AND:
        for (k = node + 2; k < end; k += k[1])
            if ((r = eval_node(c, k)) <= 0) return r;
        return 1;
    case OP_OR:
        for (k = node + 2; k < end; k += k[1])
            if ((r = eval_node(c, k)) != 0) return r;
        return 0;
    case OP_NOT:
        r = eval_node(c, node + 2);
        return r < 0 ? r : !r;
    case OP_NEAR: {
        PyObject *spec = PyTuple_GET_ITEM(self->constants, node[2]);
        r = near_decide_in((Near *)self->near, spec, NULL, c->spans, c->norms, c);
        if (r != 2) return r;
        PyObject *result = PyObject_CallFunctionObjArgs(self->near_python, spec, c->scan,
                                                        Py_None, NULL);
        if (!result) return -1;
        r = PyObject_IsTrue(result);
        Py_DECREF(result);
        return r;
    }
    case OP_CALL:
        return truth_of(PyTuple_GET_ITEM(self->constants, node[2]), c->scan);
    }
    PyErr_SetString(PyExc_SystemError, "a test with an unknown op");
    return -1;
}

/* Run the hit statements from ``node`` to ``end`` into h: 0, 2 for the fallback (a NEAR
 * the Python must do), or -1. */
static int run_hits(Call *c, const int32_t *node, const int32_t *end, Hits *h) {
    Matcher *self = c->self;
    int rc = 0;
    for (const int32_t *k = node; k < end && !rc; k += k[1]) {
        switch (k[0]) {
        case ST_GROUP: {
            Group group = {k[2], k + 3, k[1] - 3};
            rc = collect(c, &group, h);
            break;
        }
        case ST_NEAR:
            rc = near_pairs((Near *)self->near, PyTuple_GET_ITEM(self->constants, k[2]), c,
                            k + 4, k[3], k[1] - 4 - k[3], h);
            break;
        case ST_IF: {
            int holds = eval_node(c, k + 2);
            if (holds < 0) return -1;
            if (holds) rc = run_hits(c, k + 2 + k[3], k + k[1], h);
            break;
        }
        case ST_ALL:
            rc = run_hits(c, k + 2, k + k[1], h);
            break;
        default:
            PyErr_SetString(PyExc_SystemError, "a statement with an unknown op");
            return -1;
        }
    }
    return rc;
}

/* A rule that matched: a new reference to its Match, Py_None for the fallback, or NULL. */
static PyObject *program_match(Call *c, const Program *program) {
    Matcher *self = c->self;
    Hits h = {NULL, 0, 0, NULL, 0, 0};
    PyObject *out = NULL, *hits = NULL;
    int rc = 0;
    for (Py_ssize_t g = 0; g < program->nfree && !rc; g++) rc = collect(c, &program->free[g], &h);
    for (Py_ssize_t k = 0; k < program->nguards && !rc; k++) {
        const Guard *guard = &program->guards[k];
        int holds = eval_node(c, self->code + guard->condition);
        if (holds < 0) rc = -1;
        for (Py_ssize_t g = 0; holds > 0 && g < guard->ngroups && !rc; g++)
            rc = collect(c, &guard->groups[g], &h);
    }
    if (!rc && program->hits >= 0) {
        const int32_t *node = self->code + program->hits;
        rc = run_hits(c, node, node + node[1], &h);
    }
    if (rc == 2) {
        out = Py_NewRef(Py_None);
        goto done;
    }
    if (rc < 0) goto done;
    if (h.pids == 1 && !h.filtered) {
        hits = Py_NewRef(h.single); /* the pattern's own hits, shared */
    } else {
        qsort(h.items, (size_t)h.n, sizeof(Item), key_order);
        int overlap = 0;
        for (Py_ssize_t i = 1; i < h.n && !overlap; i++)
            overlap = h.items[i].fi == h.items[i - 1].fi && h.items[i].start < h.items[i - 1].end;
        if (overlap) { /* two overlap, or one is there twice: ordered_hit_keys's way */
            if (!(hits = ordered_hits(h.items, h.n, program->tracked))) goto done;
        } else {
            if (!(hits = PyTuple_New(h.n))) goto done;
            for (Py_ssize_t i = 0; i < h.n; i++) PyTuple_SET_ITEM(hits, i, Py_NewRef(h.items[i].hit));
        }
    }
    PyObject *values[3] = {program->rule_id, program->version, hits};
    out = new_object(self->match_type, self->match_offsets, values, 3);
done:
    Py_XDECREF(hits);
    PyMem_Free(h.items);
    return out;
}

/* Whether layer ``layer`` fires for the rule at ``base``: every slot set, the negated one not. */
static inline int fires(const Layer *layer, const uint64_t *acc, Py_ssize_t base, int shift) {
    if (shift <= 6) { /* the rule's slots in one word: one test */
        uint64_t bits = acc[base >> 6] >> (base & 63);
        return !(bits & layer->negated) && (bits & layer->need) == layer->need;
    }
    if (acc_bit(acc, base + layer->neg)) return 0;
    for (Py_ssize_t j = 0; j < layer->nslots; j++)
        if (!acc_bit(acc, base + layer->slots[j])) return 0;
    return 1;
}

/* scan._pids (Scan.pids), from the bits, before Python code that may use it. */
static int set_pids(Call *c) {
    PyObject *old = attr(c->scan, "_pids");
    if (!old) return -1;
    int missing = old == Py_None;
    Py_DECREF(old);
    if (!missing) return 0;
    PyObject *pids = PySet_New(NULL);
    if (!pids) return -1;
    for (Py_ssize_t pid = 0; pid < c->self->npids; pid++) {
        if (!c->present[pid >> 3]) {
            pid |= 7;
            continue;
        }
        if (!((c->present[pid >> 3] >> (pid & 7)) & 1)) continue;
        PyObject *p = PyLong_FromSsize_t(pid);
        if (!p || PySet_Add(pids, p) < 0) {
            Py_XDECREF(p);
            Py_DECREF(pids);
            return -1;
        }
        Py_DECREF(p);
    }
    int rc = PyObject_SetAttrString(c->scan, "_pids", pids);
    Py_DECREF(pids);
    return rc;
}

/* match(scan, scope, fallback): Engine._decide, then Engine._matches.
 *   scope: one byte per rule, whether it is enabled and its scope admits the feed;
 *   fallback(index): Engine._match_one. */
static PyObject *Matcher_match(Matcher *self, PyObject *args) {
    PyObject *scan, *fallback;
    Py_buffer scope;
    if (!self->programs || self->cleared) {
        PyErr_SetString(PyExc_RuntimeError, "this Matcher is not initialised, or was cleared");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "Oy*O", &scan, &scope, &fallback)) return NULL;
    PyObject *out = NULL;
    uint64_t *acc = NULL;
    uint64_t *touched = NULL; /* bit per rule: some search it has was found (or always) */
    Py_ssize_t words = self->nprograms / 64 + 1;
    Call c;
    if (call_open(&c, self, scan) < 0) goto done;
    if (scope.len != self->nprograms) {
        PyErr_SetString(PyExc_ValueError, "scope: one byte per rule");
        goto done;
    }
    acc = PyMem_Malloc((size_t)(self->nwords ? self->nwords : 1) * sizeof(uint64_t));
    touched = PyMem_Malloc((size_t)words * sizeof(uint64_t));
    if (!acc || !touched) {
        PyErr_NoMemory();
        goto done;
    }
    memcpy(acc, self->init, (size_t)self->nwords * sizeof(uint64_t));
    memcpy(touched, self->always, (size_t)words * sizeof(uint64_t));
    for (Py_ssize_t slot = 0; slot <= c.found_mask; slot++) {
        int32_t sid = c.found[slot].sid;
        long fields = c.found[slot].fields;
        if (sid < 0) continue;
        const int32_t *at = self->searches + self->search_at[sid];
        for (int32_t k = *at++; k > 0; k--, at++) c.present[*at >> 3] |= (uint8_t)(1 << (*at & 7));
        for (int32_t k = *at++; k > 0; k--) {
            int32_t mask = at[0], npositions = at[1];
            at += 2;
            if (fields & mask) {
                for (int32_t j = 0; j < npositions; j++) {
                    int32_t p = at[j], rule = p >> self->shift;
                    acc[p >> 6] |= 1ULL << (p & 63);
                    touched[rule >> 6] |= 1ULL << (rule & 63);
                }
            }
            at += npositions;
        }
    }
    if (!(out = PyList_New(0))) goto done;
    const uint8_t *admitted = scope.buf;
    int pids_set = 0;
    /* the rules touched, in order: Engine._matches's order */
    for (Py_ssize_t w = 0; w < words; w++) {
        for (uint64_t bits = touched[w]; bits; bits &= bits - 1) {
            Py_ssize_t index = w * 64 + CTZ64(bits);
            if (!admitted[index]) continue;
            Py_ssize_t base = index << self->shift;
            if (!fires(&self->query, acc, base, self->shift)) continue;
            const Program *program = &self->programs[index];
            if (!self->query.exact[index]) {
                int holds = eval_node(&c, self->code + program->test);
                if (holds < 0) goto fail;
                if (!holds) continue;
            }
            int excluded = 0, maybe = 0;
            for (Py_ssize_t l = 0; l < self->nlayers && !excluded; l++) {
                const Layer *layer = &self->layers[l];
                if (!layer->members[index] || !fires(layer, acc, base, self->shift)) continue;
                if (layer->exact[index]) excluded = 1;
                else maybe = 1;
            }
            for (Py_ssize_t x = 0; maybe && !excluded && x < program->nexcludes; x++) {
                excluded = eval_node(&c, self->code + program->excludes[x]);
                if (excluded < 0) goto fail;
            }
            if (excluded) continue;
            PyObject *match = program_match(&c, program);
            if (match == Py_None) {
                Py_DECREF(match);
                if (!pids_set && set_pids(&c) < 0) goto fail;
                pids_set = 1;
                PyObject *i = PyLong_FromSsize_t(index);
                if (!i) goto fail;
                match = PyObject_CallOneArg(fallback, i);
                Py_DECREF(i);
            }
            if (!match || PyList_Append(out, match) < 0) {
                Py_XDECREF(match);
                goto fail;
            }
            Py_DECREF(match);
        }
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    call_close(&c);
    PyMem_Free(acc);
    PyMem_Free(touched);
    PyBuffer_Release(&scope);
    return out;
}

/* Matcher.pid_hits(scan, pid): (keys, hits or None) as Scan.pid_hits gives them, from the
 * compiled pid_hits (tests compare the two). */
static PyObject *Matcher_pid_hits(Matcher *self, PyObject *args) {
    PyObject *scan;
    int pid;
    if (!PyArg_ParseTuple(args, "Oi", &scan, &pid)) return NULL;
    if (pid < 0 || pid >= self->npids) {
        PyErr_SetString(PyExc_ValueError, "no such pid");
        return NULL;
    }
    Call c;
    PyObject *out = NULL, *keys = NULL;
    PidHits *entry = call_open(&c, self, scan) < 0 ? NULL : pid_hits(&c, pid);
    if (entry && (keys = PyList_New(entry->count))) {
        int failed = 0;
        for (Py_ssize_t i = 0; i < entry->count && !failed; i++) {
            const Item *item = &c.items[entry->first + i];
            PyObject *key = Py_BuildValue("(lllO)", item->fi, item->start, item->end,
                                          self->pid_label[pid]);
            if (key) PyList_SET_ITEM(keys, i, key);
            else failed = 1;
        }
        if (!failed) out = PyTuple_Pack(2, keys, entry->clean ? entry->hits : Py_None);
    }
    Py_XDECREF(keys);
    call_close(&c);
    return out;
}

static PyMethodDef Matcher_methods[] = {
    {"match", (PyCFunction)Matcher_match, METH_VARARGS,
     "match(scan, scope, fallback): the Match of every rule that matches the scan, in rule "
     "order, as Engine._decide and Engine._matches find them."},
    {"pid_hits", (PyCFunction)Matcher_pid_hits, METH_VARARGS,
     "pid_hits(scan, pid): Scan.pid_hits, compiled."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Matcher_members[] = {
    {"constants", T_OBJECT, offsetof(Matcher, constants), READONLY,
     "the code's constants: NEAR specs, feed: and lang: tests"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject MatcherType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot.rules._speedups.Matcher",
    .tp_basicsize = sizeof(Matcher),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Engine._decide and Engine._matches, compiled.",
    .tp_traverse = (traverseproc)Matcher_traverse,
    .tp_clear = (inquiry)Matcher_clear,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Matcher_init,
    .tp_dealloc = (destructor)Matcher_dealloc,
    .tp_methods = Matcher_methods,
    .tp_members = Matcher_members,
};

/* --- Normalizer: bot.rules.text.normalize(text, casefold=False), the common case ---------
 *
 * Text whose every character is left alone by NFKC, is white space, or folds to exactly one
 * other character (``’`` → ``'``, full-width ``Ａ`` → ``A``): white space runs become one
 * space, the folds are applied, and the offset map is built as text.normalize's _Builder
 * builds it (linear pieces merged, an explicit piece for each collapsed run). Any other
 * character — one that expands, vanishes or combines, or lies beyond the BMP — returns
 * None, and text.normalize does the whole text in Python. tests/test_rules_native.py
 * compares the two. */

enum { K_PLAIN = 0, K_SPACE = 1, K_SIMPLE = 2, K_COMPLEX = 3 };

typedef struct {
    PyObject_HEAD
    uint8_t kinds[65536];   /* by BMP character: K_* (K_SPACE: white space but " ") */
    Py_UCS4 *simple;        /* by BMP character: what a K_SIMPLE character folds to */
    Py_UCS4 *lower;         /* by BMP character: its case folding, 0 when not one character */
    PyTypeObject *type;     /* Normalized */
    Py_ssize_t offsets[6];  /* its slots: original, text, piece_starts, piece_origins,
                               piece_spans, wide */
} Normalizer;

static void Normalizer_dealloc(Normalizer *self) {
    PyMem_Free(self->simple);
    PyMem_Free(self->lower);
    Py_XDECREF(self->type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_UCS4 *uint32_table(const Py_buffer *buf) {
    Py_UCS4 *out = PyMem_Malloc(65536 * sizeof(Py_UCS4));
    if (!out) {
        PyErr_NoMemory();
        return NULL;
    }
    const uint8_t *b = buf->buf;
    for (Py_ssize_t c = 0; c < 65536; c++) {
        out[c] = (Py_UCS4)b[4 * c] | (Py_UCS4)b[4 * c + 1] << 8 | (Py_UCS4)b[4 * c + 2] << 16 |
                 (Py_UCS4)b[4 * c + 3] << 24;
        if (out[c] > 0x10FFFF) {
            PyMem_Free(out);
            PyErr_SetString(PyExc_ValueError, "a character out of range");
            return NULL;
        }
    }
    return out;
}

/* Normalizer(kinds, simple, lower, normalized_type): kinds is 65,536 bytes (K_*); simple
 * and lower 65,536 little-endian uint32: the fold of each K_SIMPLE character, and the
 * case folding of each character (0 when it is not one character). */
static int Normalizer_init(Normalizer *self, PyObject *args, PyObject *kwds) {
    Py_buffer kinds, simple, lower;
    PyTypeObject *type;
    static char *kwlist[] = {"kinds", "simple", "lower", "normalized_type", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*y*O!", kwlist, &kinds, &simple, &lower,
                                     &PyType_Type, &type))
        return -1;
    int rc = -1;
    const char *names[6] = {"original", "text", "piece_starts", "piece_origins",
                            "piece_spans", "wide"};
    if (self->type) {
        PyErr_SetString(PyExc_RuntimeError, "Normalizer is already initialised");
        goto done;
    }
    if (kinds.len != 65536 || simple.len != 65536 * 4 || lower.len != 65536 * 4) {
        PyErr_SetString(PyExc_ValueError, "kinds: 65536 bytes; simple, lower: 65536 uint32");
        goto done;
    }
    if (slot_offsets(type, names, 6, self->offsets) < 0) goto done;
    memcpy(self->kinds, kinds.buf, 65536);
    if (!(self->simple = uint32_table(&simple)) || !(self->lower = uint32_table(&lower)))
        goto done;
    for (Py_ssize_t c = 0; c < 128; c++)
        if ((c && !self->lower[c]) || self->lower[c] > 127) { /* NUL folds to itself */
            PyErr_SetString(PyExc_ValueError, "lower: ASCII must fold to ASCII");
            goto done;
        }
    for (Py_ssize_t c = 0; c < 65536; c++)
        if (self->kinds[c] > K_COMPLEX || (self->kinds[c] == K_SIMPLE && !self->simple[c])) {
            PyErr_SetString(PyExc_ValueError, "a kind or a fold out of range");
            goto done;
        }
    Py_INCREF(type);
    self->type = type;
    rc = 0;
done:
    PyBuffer_Release(&kinds);
    PyBuffer_Release(&simple);
    return rc;
}

typedef struct {
    Py_ssize_t start, origin; /* where it begins in the output; its original index */
    Py_ssize_t end;           /* an explicit piece's one span is (origin, end); -1: linear */
} Piece;

typedef struct {
    Py_UCS4 *out;
    Py_ssize_t size;
    Piece *pieces;
    Py_ssize_t npieces;
    Py_ssize_t linear_end;
} Builder;

static void b_piece(Builder *b, Py_ssize_t origin, Py_ssize_t end) {
    b->pieces[b->npieces++] = (Piece){b->size, origin, end};
}

/* _Builder.linear: text[from:to] (already folded into ``chars``) copied from ``origin`` */
static void b_linear(Builder *b, const Py_UCS4 *chars, Py_ssize_t len, Py_ssize_t origin) {
    if (!len) return;
    if (origin != b->linear_end) b_piece(b, origin, -1);
    memcpy(b->out + b->size, chars, (size_t)len * sizeof(Py_UCS4));
    b->size += len;
    b->linear_end = origin + len;
}

/* _Builder.explicit(" ", [(start, end)]) */
static void b_space(Builder *b, Py_ssize_t start, Py_ssize_t end) {
    b_piece(b, start, end);
    b->out[b->size++] = ' ';
    b->linear_end = -1;
}

/* _Builder.widen_last: the last character (a space) also stands for the original up to end */
static void b_widen_last(Builder *b, Py_ssize_t end) {
    Piece *last = &b->pieces[b->npieces - 1];
    if (last->end < 0) { /* split the linear piece: its last character becomes explicit */
        Py_ssize_t o = last->origin + b->size - 1 - last->start;
        b->size -= 1;
        if (b->size == last->start) b->npieces -= 1;
        b->linear_end = -1;
        b_space(b, o, end);
    } else {
        last->end = end;
        b->linear_end = -1;
    }
}

static inline int is_space(const Normalizer *self, Py_UCS4 c) {
    return c == ' ' || (c < 0x10000 && self->kinds[c] == K_SPACE);
}

static PyObject *Normalizer_normalize(Normalizer *self, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "expected a str");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (kind == PyUnicode_4BYTE_KIND) Py_RETURN_NONE; /* beyond the BMP: Python's way */
    if (kind == PyUnicode_2BYTE_KIND) {
        for (Py_ssize_t i = 0; i < n; i++)
            if (self->kinds[((const Py_UCS2 *)data)[i]] == K_COMPLEX) Py_RETURN_NONE;
    } else {
        for (Py_ssize_t i = 0; i < n; i++)
            if (self->kinds[((const Py_UCS1 *)data)[i]] == K_COMPLEX) Py_RETURN_NONE;
    }
    PyObject *result = NULL;
    Builder b = {NULL, 0, NULL, 0, -1};
    Py_UCS4 *src = PyUnicode_AsUCS4Copy(text);
    b.out = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_UCS4));
    /* a piece per mark at most twice, plus one: each mark opens at most two */
    b.pieces = PyMem_Malloc((size_t)(2 * n + 2) * sizeof(Piece));
    if (!src || !b.out || !b.pieces) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t pos = 0;
    for (Py_ssize_t p = 0; p < n; p++) {
        Py_UCS4 c = src[p];
        uint8_t k = self->kinds[c];
        int space_mark = k == K_SPACE || (c == ' ' && p + 1 < n && src[p + 1] == ' ');
        if (!space_mark && k != K_SIMPLE) continue;
        if (p < pos) continue;
        if (space_mark) {
            Py_ssize_t at = p;
            if (at > pos && src[at - 1] == ' ') at -= 1; /* " \n": the space belongs to the run */
            Py_ssize_t end = at + 1;
            while (end < n && is_space(self, src[end])) end++;
            b_linear(&b, src + pos, at - pos, pos);
            if (b.size && b.out[b.size - 1] == ' ') b_widen_last(&b, end);
            else if (end - at == 1) {
                Py_UCS4 sp = ' ';
                b_linear(&b, &sp, 1, at);
            } else b_space(&b, at, end);
            pos = end;
            p = end - 1;
            continue;
        }
        b_linear(&b, src + pos, p - pos, pos);
        b_linear(&b, &self->simple[c], 1, p);
        pos = p + 1;
    }
    b_linear(&b, src + pos, n - pos, pos);
    PyObject *out = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, b.out, b.size);
    PyObject *starts = PyTuple_New(b.npieces), *origins = PyTuple_New(b.npieces),
             *spans = PyTuple_New(b.npieces);
    int failed = !out || !starts || !origins || !spans;
    for (Py_ssize_t i = 0; i < b.npieces && !failed; i++) {
        const Piece *piece = &b.pieces[i];
        PyObject *start = PyLong_FromSsize_t(piece->start);
        PyObject *origin = PyLong_FromSsize_t(piece->origin);
        PyObject *span = piece->end < 0 ? Py_NewRef(Py_None)
                                        : Py_BuildValue("((nn))", piece->origin, piece->end);
        if (start) PyTuple_SET_ITEM(starts, i, start);
        if (origin) PyTuple_SET_ITEM(origins, i, origin);
        if (span) PyTuple_SET_ITEM(spans, i, span);
        failed = !start || !origin || !span;
    }
    if (!failed) {
        PyObject *values[6] = {text, out, starts, origins, spans, Py_False};
        result = new_object(self->type, self->offsets, values, 6);
    }
    Py_XDECREF(out);
    Py_XDECREF(starts);
    Py_XDECREF(origins);
    Py_XDECREF(spans);
done:
    PyMem_Free(src);
    PyMem_Free(b.out);
    PyMem_Free(b.pieces);
    return result;
}

/* str.casefold() for text whose every character folds to one character of the BMP (the
 * same length, so the two texts share their offsets); None otherwise. */
static PyObject *Normalizer_casefold(Normalizer *self, PyObject *text) {
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "expected a str");
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    if (kind == PyUnicode_4BYTE_KIND) Py_RETURN_NONE;
    if (PyUnicode_IS_ASCII(text)) { /* ASCII folds to ASCII: written straight into the str */
        PyObject *result = PyUnicode_New(n, 127);
        if (!result) return NULL;
        const Py_UCS1 *src = data;
        Py_UCS1 *dst = PyUnicode_1BYTE_DATA(result);
        for (Py_ssize_t i = 0; i < n; i++) dst[i] = (Py_UCS1)self->lower[src[i]];
        return result;
    }
    Py_UCS4 *out = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(Py_UCS4));
    if (!out) return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i), to = self->lower[c];
        if (!to) {
            PyMem_Free(out);
            Py_RETURN_NONE;
        }
        out[i] = to;
    }
    PyObject *result = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, out, n);
    PyMem_Free(out);
    return result;
}

/* The same Normalized with its text case-folded (the offset map shared), when every
 * character folds to one; else None. */
static PyObject *Normalizer_casefolded(Normalizer *self, PyObject *normalized) {
    if (!Py_IS_TYPE(normalized, self->type)) {
        PyErr_Format(PyExc_TypeError, "expected %s", self->type->tp_name);
        return NULL;
    }
    PyObject *values[6];
    for (int i = 0; i < 6; i++) {
        values[i] = *(PyObject **)((char *)normalized + self->offsets[i]);
        if (!values[i]) {
            PyErr_SetString(PyExc_AttributeError, "a Normalized without all its fields");
            return NULL;
        }
    }
    PyObject *folded = Normalizer_casefold(self, values[1]);
    if (!folded || folded == Py_None) return folded;
    values[1] = folded;
    PyObject *out = new_object(self->type, self->offsets, values, 6);
    Py_DECREF(folded);
    return out;
}

static PyMethodDef Normalizer_methods[] = {
    {"casefold", (PyCFunction)Normalizer_casefold, METH_O,
     "casefold(text): text.casefold() when every character folds to one, else None."},
    {"casefolded", (PyCFunction)Normalizer_casefolded, METH_O,
     "casefolded(normalized): the same with its text case-folded, or None."},
    {"normalize", (PyCFunction)Normalizer_normalize, METH_O,
     "normalize(text): text.normalize(text, casefold=False), or None when a character needs "
     "Python's way."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NormalizerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot.rules._speedups.Normalizer",
    .tp_basicsize = sizeof(Normalizer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "text.normalize(text, casefold=False) for text of one-to-one characters.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Normalizer_init,
    .tp_dealloc = (destructor)Normalizer_dealloc,
    .tp_methods = Normalizer_methods,
};

/* --- Near: Engine.near(spec, scan, None), the common case ----------------------------------
 *
 * Whether some occurrence of the left side is within ``distance`` words of one of the right
 * side (after it, for ONEAR), in a field both look in: for each left occurrence only the
 * right ones nearest to it are compared (Engine._near_any), and words are counted between
 * the two only, up to the limit (text.words_within: a run of word characters is a word, an
 * unspaced run a word per two characters). Returns None — and Engine.near decides in
 * Python — when a side has a regular expression, when its searches look in texts that do
 * not line up, or when the text has characters beyond the BMP. */

struct Near {
    PyObject_HEAD
    uint8_t word[8192];     /* word characters of the BMP, as bits */
    uint8_t unspaced[8192]; /* characters of unspaced scripts of the BMP, as bits */
    struct NearSpec *specs; /* the specs seen, read once (found by identity through slots) */
    Py_ssize_t nspecs, specs_cap;
    int32_t *slots;
    Py_ssize_t nslots;
};

/* A NEAR's spec (engine._Near) as C reads it: kept with a reference to the spec itself,
 * which the engine's generated code holds for as long as the engine lives. */
typedef struct NearSpec {
    PyObject *spec;
    PyObject **left, **right; /* the sides' search ids, as the spec's own ints */
    Py_ssize_t nleft, nright;
    long distance, mask;
    int ordered, regex;
    PyObject *casefold; /* None, True or False */
} NearSpec;

static void Near_dealloc(Near *self) {
    for (Py_ssize_t i = 0; i < self->nspecs; i++) {
        NearSpec *spec = &self->specs[i];
        for (Py_ssize_t k = 0; k < spec->nleft; k++) Py_XDECREF(spec->left[k]);
        for (Py_ssize_t k = 0; k < spec->nright; k++) Py_XDECREF(spec->right[k]);
        PyMem_Free(spec->left);
        PyMem_Free(spec->right);
        Py_XDECREF(spec->casefold);
        Py_XDECREF(spec->spec);
    }
    PyMem_Free(self->specs);
    PyMem_Free(self->slots);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int side_ids(PyObject *spec, const char *name, PyObject ***out, Py_ssize_t *n) {
    PyObject *sids = attr(spec, name);
    if (!sids) return -1;
    PyObject *fast = PySequence_Fast(sids, "a NEAR side's searches: expected a collection");
    Py_DECREF(sids);
    if (!fast) return -1;
    *n = PySequence_Fast_GET_SIZE(fast);
    *out = PyMem_Calloc((size_t)(*n ? *n : 1), sizeof(PyObject *));
    if (!*out) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) (*out)[i] = Py_NewRef(PySequence_Fast_GET_ITEM(fast, i));
    Py_DECREF(fast);
    return 0;
}

/* The spec as read before, or read now. */
static Py_ssize_t near_spec_slot(const void *items, Py_ssize_t i, Py_ssize_t nslots) {
    return id_slot((uintptr_t)((const NearSpec *)items)[i].spec >> 4, nslots);
}

static NearSpec *near_spec(Near *self, PyObject *spec) {
    if (self->nslots) {
        Py_ssize_t slot = id_slot((uintptr_t)spec >> 4, self->nslots);
        while (self->slots[slot]) {
            NearSpec *seen = &self->specs[self->slots[slot] - 1];
            if (seen->spec == spec) return seen;
            slot = (slot + 1) & (self->nslots - 1);
        }
    }
    NearSpec made = {NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, NULL};
    PyObject *tmp;
    if (side_ids(spec, "left_sids", &made.left, &made.nleft) < 0 ||
        side_ids(spec, "right_sids", &made.right, &made.nright) < 0 ||
        !(made.casefold = attr(spec, "casefold")))
        goto fail;
    if (!(tmp = attr(spec, "distance"))) goto fail;
    made.distance = PyLong_AsLong(tmp);
    Py_DECREF(tmp);
    if (!(tmp = attr(spec, "mask"))) goto fail;
    made.mask = PyLong_AsLong(tmp);
    Py_DECREF(tmp);
    if (!(tmp = attr(spec, "ordered"))) goto fail;
    made.ordered = PyObject_IsTrue(tmp);
    Py_DECREF(tmp);
    if (!(tmp = attr(spec, "regex"))) goto fail;
    made.regex = PyObject_IsTrue(tmp);
    Py_DECREF(tmp);
    if (PyErr_Occurred()) goto fail;
    if (index_reserve(&self->slots, &self->nslots, self->specs, self->nspecs, near_spec_slot) < 0 ||
        RESERVE(self->specs, self->specs_cap, self->nspecs + 1) < 0)
        goto fail;
    made.spec = Py_NewRef(spec);
    Py_ssize_t slot = id_slot((uintptr_t)spec >> 4, self->nslots);
    while (self->slots[slot]) slot = (slot + 1) & (self->nslots - 1);
    self->specs[self->nspecs] = made;
    self->slots[slot] = (int32_t)(++self->nspecs);
    return &self->specs[self->nspecs - 1];
fail:
    for (Py_ssize_t k = 0; k < made.nleft; k++) Py_XDECREF(made.left[k]);
    for (Py_ssize_t k = 0; k < made.nright; k++) Py_XDECREF(made.right[k]);
    PyMem_Free(made.left);
    PyMem_Free(made.right);
    Py_XDECREF(made.casefold);
    return NULL;
}

static int Near_init(Near *self, PyObject *args, PyObject *kwds) {
    Py_buffer word, unspaced;
    static char *kwlist[] = {"word_bmp", "unspaced_bmp", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*y*", kwlist, &word, &unspaced)) return -1;
    int rc = -1;
    if (word.len != 8192 || unspaced.len != 8192) {
        PyErr_SetString(PyExc_ValueError, "bitmaps of 8192 bytes");
    } else {
        memcpy(self->word, word.buf, 8192);
        memcpy(self->unspaced, unspaced.buf, 8192);
        rc = 0;
    }
    PyBuffer_Release(&word);
    PyBuffer_Release(&unspaced);
    return rc;
}

static inline int bit_of(const uint8_t *bits, Py_UCS4 c) {
    return c < 0x10000 && ((bits[c >> 3] >> (c & 7)) & 1);
}

/* text.words_within: whether at most ``limit`` words start in (x, y]. */
static int words_within_c(const Near *self, int kind, const void *data, Py_ssize_t x,
                          Py_ssize_t y, Py_ssize_t limit) {
    Py_UCS4 c = PyUnicode_READ(kind, data, x);
    Py_ssize_t start = x + 1;
    if (start <= y && bit_of(self->word, c) && bit_of(self->word, PyUnicode_READ(kind, data, start))) {
        /* past the rest of x's word (words_within's match may run beyond y: the same) */
        while (start <= y && bit_of(self->word, PyUnicode_READ(kind, data, start))) start++;
    } else if (start <= y && bit_of(self->unspaced, c) &&
               bit_of(self->unspaced, PyUnicode_READ(kind, data, start))) {
        Py_ssize_t j = x;
        while (j > 0 && bit_of(self->unspaced, PyUnicode_READ(kind, data, j - 1))) j--;
        if ((start - j) % 2) start++;
    }
    if (start > y) return 1;
    Py_ssize_t words = 0, i = start, end = y + 1;
    while (i < end) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (bit_of(self->word, ch)) {
            while (i < end && bit_of(self->word, PyUnicode_READ(kind, data, i))) i++;
        } else if (bit_of(self->unspaced, ch)) {
            i++;
            if (i < end && bit_of(self->unspaced, PyUnicode_READ(kind, data, i))) i++;
        } else {
            i++;
            continue;
        }
        if (++words > limit) return 0;
    }
    return 1;
}

static int span_order(const void *a, const void *b) {
    const Span *x = a, *y = b;
    if (x->start != y->start) return x->start < y->start ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* Engine._close */
static int close_enough(const Near *self, int kind, const void *data, int ordered,
                        Py_ssize_t distance, Span a, Span b) {
    Span first, second;
    if (ordered) {
        if (b.start <= a.start) return 0;
        first = a;
        second = b;
    } else if (a.start <= b.start) {
        first = a;
        second = b;
    } else {
        first = b;
        second = a;
    }
    Py_ssize_t last = first.end - 1;
    if (second.start <= last) return 1;
    return words_within_c(self, kind, data, last, second.start, distance + 1);
}

typedef struct {
    long sid, fields;
} SideSearch;

/* The searches of a side found in some field (those of ``sids`` in fields_of, or in the
 * matcher's call ``c`` when given), with those fields: *n of them in *out (PyMem), and their
 * fields ORed, or -1. */
static long side_found(PyObject *const *sids, Py_ssize_t nsids, PyObject *fields_of,
                       const Call *c, SideSearch **out, Py_ssize_t *n) {
    *out = PyMem_Malloc((size_t)(nsids ? nsids : 1) * sizeof(SideSearch));
    if (!*out) {
        PyErr_NoMemory();
        return -1;
    }
    *n = 0;
    long all = 0;
    for (Py_ssize_t i = 0; i < nsids; i++) {
        long v = PyLong_AsLong(sids[i]), f;
        if (v == -1 && PyErr_Occurred()) return -1;
        if (c) {
            if (v < 0 || v > INT32_MAX || !(f = found_fields(c, (int32_t)v))) continue;
        } else {
            PyObject *found = PyDict_GetItemWithError(fields_of, sids[i]); /* borrowed */
            if (!found) {
                if (PyErr_Occurred()) return -1;
                continue;
            }
            f = PyLong_AsLong(found);
            if (f == -1 && PyErr_Occurred()) return -1;
        }
        (*out)[(*n)++] = (SideSearch){v, f};
        all |= f;
    }
    return all;
}

/* The spans in field fi of a side's searches found there (appended to *out). */
static int side_spans(const SideSearch *found, Py_ssize_t nfound, int fi,
                      const Occurrences *spans, Span **out, Py_ssize_t *n, Py_ssize_t *cap) {
    for (Py_ssize_t k = 0; k < nfound; k++) {
        if (!((found[k].fields >> fi) & 1)) continue;
        const OccList *list = occ_find(spans, (found[k].sid << 3) | fi);
        if (!list) continue;
        if (RESERVE(*out, *cap, *n + list->n) < 0) return -1;
        memcpy(*out + *n, list->spans, (size_t)list->n * sizeof(Span));
        *n += list->n;
    }
    return 0;
}

/* The text a NEAR's words are counted in, in field fi: 1 and a new reference to the str in
 * *out; 2 when Python must count (folded and exact texts that do not line up, astral
 * characters); -1. */
static int near_text(const NearSpec *spec, PyObject *norms, int fi, PyObject **out) {
    PyObject *text_norm;
    *out = NULL;
    if (spec->casefold != Py_None) {
        PyObject *key = Py_BuildValue("(iO)", fi, spec->casefold);
        if (!key) return -1;
        text_norm = PyDict_GetItemWithError(norms, key);
        Py_DECREF(key);
    } else { /* both kinds: the folded text, if it lines up with the exact one */
        PyObject *key = Py_BuildValue("(iO)", fi, Py_True);
        if (!key) return -1;
        text_norm = PyDict_GetItemWithError(norms, key);
        Py_DECREF(key);
        if (text_norm) {
            if (!(key = Py_BuildValue("(iO)", fi, Py_False))) return -1;
            PyObject *exact = PyDict_GetItemWithError(norms, key);
            Py_DECREF(key);
            if (!exact && PyErr_Occurred()) return -1;
            if (exact) {
                PyObject *a = attr(exact, "text");
                PyObject *b = a ? attr(text_norm, "text") : NULL;
                int differ = b && PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b);
                Py_XDECREF(a);
                Py_XDECREF(b);
                if (PyErr_Occurred()) return -1;
                if (differ) return 2;
            }
        }
    }
    if (!text_norm) {
        if (!PyErr_Occurred()) PyErr_SetString(PyExc_KeyError, "a field not normalised");
        return -1;
    }
    PyObject *wide = attr(text_norm, "wide");
    if (!wide) return -1;
    int is_wide = PyObject_IsTrue(wide);
    Py_DECREF(wide);
    if (is_wide) return is_wide < 0 ? -1 : 2; /* astral characters: counted one by one */
    if (!(*out = attr(text_norm, "text"))) return -1;
    if (!PyUnicode_Check(*out)) {
        Py_CLEAR(*out);
        PyErr_SetString(PyExc_TypeError, "Normalized.text: expected str");
        return -1;
    }
    return 1;
}

/* near_text, asked once per field and kind in a matcher's call. */
static int call_near_text(Call *c, const NearSpec *spec, int fi, PyObject **out) {
    int k = spec->casefold == Py_None ? 2 : spec->casefold == Py_True;
    if (!c->near_state[fi][k]) {
        int got = near_text(spec, c->norms, fi, &c->near_text[fi][k]);
        if (got < 0) return -1;
        c->near_state[fi][k] = (int8_t)got;
    }
    *out = c->near_text[fi][k];
    Py_XINCREF(*out);
    return c->near_state[fi][k];
}

/* Engine.near(spec, scan, None) from the scan's fields_of, _found and norms (or, in a
 * matcher's call, from ``c``): 1, 0, 2 to decide in Python (see above), or -1. */
static int near_decide_in(Near *self, PyObject *spec_obj, PyObject *fields_of, PyObject *spans,
                          PyObject *norms, Call *c) {
    Span *lefts = NULL, *rights = NULL, *reach = NULL;
    SideSearch *left_found = NULL, *right_found = NULL;
    Py_ssize_t nl = 0, nr = 0, capl = 0, capr = 0, nleft = 0, nright = 0;
    int result = -1;
    const NearSpec *spec = near_spec(self, spec_obj);
    if (!spec) goto done;
    if (spec->regex) {
        result = 2;
        goto done;
    }
    long distance = spec->distance, mask = spec->mask, ordered = spec->ordered;
    long left = side_found(spec->left, spec->nleft, fields_of, c, &left_found, &nleft);
    if (left < 0) goto done;
    left &= mask;
    long right = left ? side_found(spec->right, spec->nright, fields_of, c, &right_found, &nright)
                      : 0;
    if (right < 0) goto done;
    long both = left & right;
    for (int fi = 0; fi < 8 && both; fi++) {
        if (!((both >> fi) & 1)) continue;
        nl = nr = 0;
        if (side_spans(left_found, nleft, fi, (Occurrences *)spans, &lefts, &nl, &capl) < 0 ||
            side_spans(right_found, nright, fi, (Occurrences *)spans, &rights, &nr, &capr) < 0)
            goto done;
        if (!nl || !nr) continue;
        PyObject *text;
        int got = c ? call_near_text(c, spec, fi, &text) : near_text(spec, norms, fi, &text);
        if (got != 1) {
            result = got;
            goto done;
        }
        int kind = PyUnicode_KIND(text);
        const void *data = PyUnicode_DATA(text);
        qsort(rights, (size_t)nr, sizeof(Span), span_order);
        PyMem_Free(reach);
        reach = PyMem_Malloc((size_t)nr * sizeof(Span));
        if (!reach) {
            Py_DECREF(text);
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < nr; i++)
            reach[i] = (i && reach[i - 1].end >= rights[i].end) ? reach[i - 1] : rights[i];
        int found = 0;
        for (Py_ssize_t k = 0; k < nl && !found; k++) {
            Span a = lefts[k];
            /* bisect_right (ordered) or bisect_left over the right starts */
            Py_ssize_t lo = 0, hi = nr;
            while (lo < hi) {
                Py_ssize_t mid = (lo + hi) / 2;
                if (ordered ? rights[mid].start <= a.start : rights[mid].start < a.start) lo = mid + 1;
                else hi = mid;
            }
            if (lo < nr && close_enough(self, kind, data, (int)ordered, distance, a, rights[lo]))
                found = 1;
            else if (!ordered && lo > 0 &&
                     close_enough(self, kind, data, 0, distance, a, reach[lo - 1]))
                found = 1;
        }
        Py_DECREF(text);
        if (found) {
            result = 1;
            goto done;
        }
    }
    result = 0;
done:
    PyMem_Free(lefts);
    PyMem_Free(rights);
    PyMem_Free(reach);
    PyMem_Free(left_found);
    PyMem_Free(right_found);
    return result;
}

/* decide(spec, scan): True, False, or None to decide in Python (see above). */
static PyObject *Near_decide(Near *self, PyObject *args) {
    PyObject *spec_obj, *scan;
    if (!PyArg_ParseTuple(args, "OO", &spec_obj, &scan)) return NULL;
    PyObject *fields_of = NULL, *spans = NULL, *norms = NULL, *result = NULL;
    if (!(fields_of = get_slot(scan, "fields_of", &PyDict_Type)) ||
        !(spans = get_slot(scan, "_found", &OccurrencesType)) ||
        !(norms = get_slot(scan, "norms", &PyDict_Type)))
        goto done;
    int decided = near_decide_in(self, spec_obj, fields_of, spans, norms, NULL);
    if (decided >= 0)
        result = Py_NewRef(decided == 2 ? Py_None : decided ? Py_True : Py_False);
done:
    Py_XDECREF(fields_of);
    Py_XDECREF(spans);
    Py_XDECREF(norms);
    return result;
}

/* A NEAR side's occurrences in one field: the span in the normalised text, and the index of
 * the pattern's item (its hit) in Call.items. */
typedef struct {
    Span span;
    Py_ssize_t item;
} SideOcc;

/* The occurrences in field fi of the side's patterns (pids) found there, appended to *out. */
static int side_occurrences(Call *c, const int32_t *pids, Py_ssize_t npids, int fi,
                            SideOcc **out, Py_ssize_t *n, Py_ssize_t *cap) {
    Matcher *self = c->self;
    for (Py_ssize_t j = 0; j < npids; j++) {
        int32_t pid = pids[j], sid = self->pid_sid[pid];
        if (!((c->present[pid >> 3] >> (pid & 7)) & 1) || !((found_fields(c, sid) >> fi) & 1))
            continue;
        const OccList *occ = occ_find((Occurrences *)c->spans, ((long)sid << 3) | fi);
        PidHits *entry = pid_hits(c, pid);
        if (!entry) return -1;
        if (!occ) continue;
        if (RESERVE(*out, *cap, *n + occ->n) < 0) return -1;
        /* the pattern's items in field fi are its spans there, in the same order */
        Py_ssize_t i = 0;
        for (Py_ssize_t k = 0; k < entry->count && i < occ->n; k++) {
            if (c->items[entry->first + k].fi != fi) continue;
            (*out)[(*n)++] = (SideOcc){occ->spans[i++], entry->first + k};
        }
        if (i != occ->n) {
            PyErr_SetString(PyExc_RuntimeError, "a pattern's hits and spans differ");
            return -1;
        }
    }
    return 0;
}

static int add_item(Hits *h, const Item *item) {
    if (RESERVE(h->items, h->cap, h->n + 1) < 0) return -1;
    h->items[h->n++] = *item;
    return 0;
}

/* Engine._near_python(spec, scan, into): the hits of every pair of a NEAR within the
 * distance (the left patterns pids[:nleft], the right ones the next nright), added to h:
 * 0, 2 to leave it to Python (a regex, texts that do not line up, astral characters), -1. */
static int near_pairs(Near *near, PyObject *spec_obj, Call *c, const int32_t *pids,
                      Py_ssize_t nleft, Py_ssize_t nright, Hits *h) {
    Matcher *self = c->self;
    const NearSpec *spec = near_spec(near, spec_obj);
    if (!spec) return -1;
    if (spec->regex) return 2;
    long left = 0, right = 0;
    for (Py_ssize_t j = 0; j < nleft + nright; j++) {
        int32_t pid = pids[j];
        if (!((c->present[pid >> 3] >> (pid & 7)) & 1)) continue;
        long fields = found_fields(c, self->pid_sid[pid]);
        if (j < nleft) left |= fields;
        else right |= fields;
    }
    long both = left & spec->mask & right;
    SideOcc *lefts = NULL, *rights = NULL;
    Py_ssize_t nl, nr, capl = 0, capr = 0;
    int rc = 0;
    for (int fi = 0; fi < 8 && both && !rc; fi++) {
        if (!((both >> fi) & 1)) continue;
        nl = nr = 0;
        if (side_occurrences(c, pids, nleft, fi, &lefts, &nl, &capl) < 0 ||
            side_occurrences(c, pids + nleft, nright, fi, &rights, &nr, &capr) < 0) {
            rc = -1;
            break;
        }
        if (!nl || !nr) continue;
        PyObject *text;
        int got = call_near_text(c, spec, fi, &text);
        if (got != 1) {
            rc = got;
            break;
        }
        int kind = PyUnicode_KIND(text);
        const void *data = PyUnicode_DATA(text);
        for (Py_ssize_t a = 0; a < nl && !rc; a++) {
            for (Py_ssize_t b = 0; b < nr && !rc; b++) {
                if (!close_enough(near, kind, data, spec->ordered, spec->distance, lefts[a].span,
                                  rights[b].span))
                    continue;
                /* by index: pid_hits may have moved the items */
                Item x = c->items[lefts[a].item], y = c->items[rights[b].item];
                if (add_item(h, &x) < 0 || add_item(h, &y) < 0) rc = -1;
                h->filtered = 1; /* sort them, and drop those there twice */
            }
        }
        Py_DECREF(text);
    }
    PyMem_Free(lefts);
    PyMem_Free(rights);
    return rc;
}

static PyMethodDef Near_methods[] = {
    {"decide", (PyCFunction)Near_decide, METH_VARARGS,
     "decide(spec, scan): Engine.near(spec, scan, None), or None to decide in Python."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject NearType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "bot.rules._speedups.Near",
    .tp_basicsize = sizeof(Near),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Engine.near(spec, scan, None), compiled.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Near_init,
    .tp_dealloc = (destructor)Near_dealloc,
    .tp_methods = Near_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_speedups", "The rule engine's hot loops, compiled (see _speedups.c).",
    -1, NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    struct {
        const char *name;
        PyTypeObject *type;
    } types[] = {
        {"Occurrences", &OccurrencesType}, {"Scanner", &ScannerType},
        {"Normalizer", &NormalizerType},   {"Near", &NearType},
        {"Matcher", &MatcherType},
    };
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i].type) < 0 ||
            PyModule_AddObjectRef(m, types[i].name, (PyObject *)types[i].type) < 0) {
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
