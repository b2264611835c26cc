/* Python bindings: ryzanstein.models._native
 *
 *   Tensor(type, rows, cols, data, row_bytes)    repack GGUF rows; .dequantize(out), .matmul(x, n, out, isa, threads)
 *   Model(config, tensors, vectors, threads, isa) the weights and a thread pool
 *   Context(model, n_ctx, n_layer)              a KV cache; .forward(tokens, pos, out, last_only)
 *   forward_batch([(context, tokens, pos, out_rows, captured), ...], out)   one forward over several caches
 *   isa_names(), best_isa(), type_name(t), block_cols(t), src_row_bytes(t, cols)
 *
 * Buffers are anything with the buffer protocol (numpy arrays): float32 for floats, int32 for tokens. The GIL
 * is released during forwards and matmuls. Forwards of the contexts of one model run one at a time.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"

static const rz_isa *isa_arg(const char *name) {
    if (!name || !*name) return rz_isa_best();
    const rz_isa *isa = rz_isa_by_name(name);
    if (!isa) PyErr_Format(PyExc_ValueError, "instruction set %s is unknown or not supported by this CPU", name);
    return isa;
}

static int get_buffer(PyObject *o, Py_buffer *b, int writable, Py_ssize_t min_bytes, const char *what) {
    if (PyObject_GetBuffer(o, b, (writable ? PyBUF_WRITABLE : 0) | PyBUF_C_CONTIGUOUS) != 0) return -1;
    if (b->len < min_bytes) {
        PyErr_Format(PyExc_ValueError, "%s holds %zd bytes, needs %zd", what, b->len, min_bytes);
        PyBuffer_Release(b);
        return -1;
    }
    return 0;
}

/* ---- Tensor ------------------------------------------------------------------------------------------ */
typedef struct {
    PyObject_HEAD
    rz_tensor t;
} TensorObject;

static void Tensor_dealloc(TensorObject *self) {
    rz_tensor_free(&self->t);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Tensor_init(TensorObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"type", "rows", "cols", "data", "row_bytes", NULL};
    int type, rows, cols;
    Py_ssize_t row_bytes = 0;
    PyObject *data;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiiO|n", names, &type, &rows, &cols, &data, &row_bytes)) return -1;
    if (!rz_type_supported(type)) {
        PyErr_Format(PyExc_ValueError, "tensor type %d is not supported", type);
        return -1;
    }
    int bc = rz_block_cols(type);
    if (rows <= 0 || cols <= 0 || cols % bc) {
        PyErr_Format(PyExc_ValueError, "a %s matrix needs columns in multiples of %d, got %d x %d",
                     rz_type_name(type), bc, rows, cols);
        return -1;
    }
    size_t need_row = rz_src_row_bytes(type, cols);
    if (row_bytes == 0) row_bytes = (Py_ssize_t)need_row;
    if ((size_t)row_bytes < need_row) {
        PyErr_Format(PyExc_ValueError, "row_bytes %zd < %zu", row_bytes, need_row);
        return -1;
    }
    Py_buffer b;
    if (get_buffer(data, &b, 0, (Py_ssize_t)((size_t)(rows - 1) * row_bytes + need_row), "tensor data") != 0) return -1;
    rz_tensor_free(&self->t);
    int bad = -1, rc;
    Py_BEGIN_ALLOW_THREADS
    rc = rz_tensor_init(&self->t, type, rows, cols, b.buf, (size_t)row_bytes, &bad);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&b);
    if (rc == -1) {
        PyErr_Format(PyExc_ValueError, "row %d has a scale that is not a finite number (a corrupt file)", bad);
        return -1;
    }
    if (rc != 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static PyObject *Tensor_dequantize(TensorObject *self, PyObject *args) {
    PyObject *out;
    int row = -1;
    if (!PyArg_ParseTuple(args, "O|i", &out, &row)) return NULL;
    const rz_tensor *t = &self->t;
    if (row >= t->rows) return PyErr_Format(PyExc_IndexError, "row %d of %d", row, t->rows);
    Py_ssize_t n = (row < 0 ? t->rows : 1) * (Py_ssize_t)t->cols;
    Py_buffer b;
    if (get_buffer(out, &b, 1, n * 4, "out") != 0) return NULL;
    if (row >= 0)
        rz_dequant_row(t, row, b.buf);
    else
        for (int r = 0; r < t->rows; r++) rz_dequant_row(t, r, (float *)b.buf + (size_t)r * t->cols);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyObject *Tensor_matmul(TensorObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"x", "n", "out", "isa", "threads", NULL};
    PyObject *xo, *oo;
    int n, threads = 1;
    const char *isa_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiO|zi", names, &xo, &n, &oo, &isa_name, &threads)) return NULL;
    const rz_isa *isa = isa_arg(isa_name);
    if (!isa) return NULL;
    const rz_tensor *t = &self->t;
    if (n <= 0) return PyErr_Format(PyExc_ValueError, "n must be positive");
    Py_buffer xb, ob;
    if (get_buffer(xo, &xb, 0, (Py_ssize_t)n * t->cols * 4, "x") != 0) return NULL;
    if (get_buffer(oo, &ob, 1, (Py_ssize_t)n * t->rows * 4, "out") != 0) {
        PyBuffer_Release(&xb);
        return NULL;
    }
    rz_act a;
    rz_act_init(&a);
    int rc = rz_act_reserve(&a, n, t->cols);
    if (rc == 0) {
        rz_pool *pool = rz_pool_new(threads);
        Py_BEGIN_ALLOW_THREADS
        rz_act_set(&a, xb.buf, n, t->cols);
        rz_act_need(&a, t->type, isa);
        rz_mm mm = {t, &a, ob.buf, t->rows};
        rz_matmul(pool, isa, &mm, 1);
        Py_END_ALLOW_THREADS
        rz_pool_free(pool);
    }
    rz_act_free(&a);
    PyBuffer_Release(&xb);
    PyBuffer_Release(&ob);
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *Tensor_get(TensorObject *self, void *which) {
    const rz_tensor *t = &self->t;
    switch ((intptr_t)which) {
    case 0: return PyLong_FromLong(t->type);
    case 1: return PyLong_FromLong(t->rows);
    case 2: return PyLong_FromLong(t->cols);
    default: return PyLong_FromSize_t(t->group_bytes * (size_t)t->groups);
    }
}

static PyMethodDef Tensor_methods[] = {
    {"dequantize", (PyCFunction)Tensor_dequantize, METH_VARARGS, "dequantize(out[, row]): float32 values into out"},
    {"matmul", (PyCFunction)(void (*)(void))Tensor_matmul, METH_VARARGS | METH_KEYWORDS,
     "matmul(x, n, out, isa=None, threads=1): out (n x rows) = x (n x cols) times the transpose"},
    {NULL},
};

static PyGetSetDef Tensor_getset[] = {
    {"type", (getter)Tensor_get, NULL, "GGML type id", (void *)0},
    {"rows", (getter)Tensor_get, NULL, "output features", (void *)1},
    {"cols", (getter)Tensor_get, NULL, "input features", (void *)2},
    {"nbytes", (getter)Tensor_get, NULL, "bytes of the repacked weights", (void *)3},
    {NULL},
};

static PyTypeObject TensorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ryzanstein.models._native.Tensor",
    .tp_basicsize = sizeof(TensorObject),
    .tp_dealloc = (destructor)Tensor_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A weight matrix repacked for the native kernels.",
    .tp_methods = Tensor_methods,
    .tp_getset = Tensor_getset,
    .tp_init = (initproc)Tensor_init,
    .tp_new = PyType_GenericNew,
};

/* ---- Model ------------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    rz_model m;
    PyObject *keep;          /* the Tensor objects the model points into */
    float **owned;           /* vectors copied in */
    int n_owned;
    pthread_mutex_t lock;    /* one forward at a time per model (the pool is shared) */
    int ready;
} ModelObject;

static void Model_dealloc(ModelObject *self) {
    if (self->m.pool) rz_pool_free(self->m.pool);
    for (int i = 0; i < self->n_owned; i++) free(self->owned[i]);
    free(self->owned);
    free(self->m.layers);
    Py_XDECREF(self->keep);
    if (self->ready) pthread_mutex_destroy(&self->lock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int cfg_int(PyObject *cfg, const char *key, int *out) {
    PyObject *v = PyDict_GetItemString(cfg, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "config lacks %s", key);
        return -1;
    }
    *out = (int)PyLong_AsLong(v);
    return PyErr_Occurred() ? -1 : 0;
}

static int cfg_float(PyObject *cfg, const char *key, float *out) {
    PyObject *v = PyDict_GetItemString(cfg, key);
    if (!v) {
        PyErr_Format(PyExc_KeyError, "config lacks %s", key);
        return -1;
    }
    *out = (float)PyFloat_AsDouble(v);
    return PyErr_Occurred() ? -1 : 0;
}

static const rz_tensor *get_tensor(ModelObject *self, PyObject *tensors, const char *name, int optional,
                                   int rows, int cols) {
    PyObject *o = PyDict_GetItemString(tensors, name);
    if (!o) {
        if (!optional) PyErr_Format(PyExc_KeyError, "missing tensor %s", name);
        return NULL;
    }
    if (!PyObject_TypeCheck(o, &TensorType)) {
        PyErr_Format(PyExc_TypeError, "%s is not a Tensor", name);
        return NULL;
    }
    const rz_tensor *t = &((TensorObject *)o)->t;
    if (t->rows != rows || t->cols != cols) {
        PyErr_Format(PyExc_ValueError, "tensor %s is %d x %d, expected %d x %d", name, t->rows, t->cols, rows, cols);
        return NULL;
    }
    PyList_Append(self->keep, o);
    return t;
}

static float *get_vector(ModelObject *self, PyObject *vectors, const char *name, int optional, int len) {
    PyObject *o = PyDict_GetItemString(vectors, name);
    if (!o) {
        if (!optional) PyErr_Format(PyExc_KeyError, "missing vector %s", name);
        return NULL;
    }
    Py_buffer b;
    if (get_buffer(o, &b, 0, (Py_ssize_t)len * 4, name) != 0) return NULL;
    float *v = aligned_alloc(RZ_ALIGN, ((size_t)len * 4 + 63) / 64 * 64);
    if (v) memcpy(v, b.buf, (size_t)len * 4);
    PyBuffer_Release(&b);
    if (!v) {
        PyErr_NoMemory();
        return NULL;
    }
    self->owned[self->n_owned++] = v;
    return v;
}

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"config", "tensors", "vectors", "threads", "isa", NULL};
    PyObject *cfg, *tensors, *vectors;
    int threads = 1;
    const char *isa_name = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!O!O!|iz", names, &PyDict_Type, &cfg, &PyDict_Type, &tensors,
                                     &PyDict_Type, &vectors, &threads, &isa_name))
        return -1;
    if (self->ready) {
        PyErr_SetString(PyExc_RuntimeError, "Model is initialised once");
        return -1;
    }
    rz_model *m = &self->m;
    if (cfg_int(cfg, "n_layer", &m->n_layer) || cfg_int(cfg, "dim", &m->dim) || cfg_int(cfg, "n_head", &m->n_head) ||
        cfg_int(cfg, "n_head_kv", &m->n_head_kv) || cfg_int(cfg, "head_dim", &m->head_dim) ||
        cfg_int(cfg, "ffn", &m->ffn) || cfg_int(cfg, "vocab", &m->vocab) || cfg_float(cfg, "eps", &m->eps) ||
        cfg_float(cfg, "rope_base", &m->rope_base) || cfg_int(cfg, "rope_neox", &m->rope_neox))
        return -1;
    if (m->n_layer < 1 || m->dim % 16 || m->head_dim % 16 || m->head_dim > 256 || m->ffn % 16 || m->n_head < 1 ||
        m->n_head_kv < 1 || m->n_head % m->n_head_kv) {
        PyErr_SetString(PyExc_ValueError, "unsupported shape: widths must be multiples of 16, head_dim <= 256, "
                                          "and the query heads a multiple of the KV heads");
        return -1;
    }
    m->isa = isa_arg(isa_name);
    if (!m->isa) return -1;
    self->keep = PyList_New(0);
    self->owned = calloc((size_t)(5 * m->n_layer + 8), sizeof(float *))  /* 5 vectors a layer at most */;
    m->layers = calloc((size_t)m->n_layer, sizeof(rz_layer));
    if (!self->keep || !self->owned || !m->layers) {
        PyErr_NoMemory();
        return -1;
    }
    const int qd = m->n_head * m->head_dim, kvd = m->n_head_kv * m->head_dim;
    int embd_rows = m->vocab;
    if (PyDict_GetItemString(tensors, "mix")) {  /* a draft head: the target's embedding, its own output rows */
        if (cfg_int(cfg, "n_feat", &m->n_feat) || cfg_int(cfg, "embd_rows", &embd_rows)) return -1;
        if (m->n_feat < 1 || m->n_feat > RZ_MAX_CAP) {
            PyErr_Format(PyExc_ValueError, "a head fuses 1..%d target layers, not %d", RZ_MAX_CAP, m->n_feat);
            return -1;
        }
        if (!(m->fuse = get_tensor(self, tensors, "fuse", 0, m->dim, m->n_feat * m->dim)) ||
            !(m->mix = get_tensor(self, tensors, "mix", 0, m->dim, 2 * m->dim)))
            return -1;
    }
    if (!(m->tok_embd = get_tensor(self, tensors, "token_embd", 0, embd_rows, m->dim))) return -1;
    m->output = get_tensor(self, tensors, "output", m->mix == NULL, m->vocab, m->dim);
    if (PyErr_Occurred()) return -1;
    if (!m->output) m->output = m->tok_embd;  /* tied */
    if (!(m->out_norm = get_vector(self, vectors, "output_norm", 0, m->dim))) return -1;
    char name[64];
#define T(field, key, rows, cols)                                                     \
    snprintf(name, sizeof name, "blk.%d." key, l);                                    \
    if (!(L->field = get_tensor(self, tensors, name, 0, rows, cols))) return -1;
#define V(field, key, len, optional)                                                  \
    snprintf(name, sizeof name, "blk.%d." key, l);                                    \
    L->field = get_vector(self, vectors, name, optional, len);                        \
    if (PyErr_Occurred()) return -1;
    for (int l = 0; l < m->n_layer; l++) {
        rz_layer *L = &m->layers[l];
        T(wq, "attn_q", qd, m->dim)
        T(wk, "attn_k", kvd, m->dim)
        T(wv, "attn_v", kvd, m->dim)
        T(wo, "attn_output", m->dim, qd)
        T(wgate, "ffn_gate", m->ffn, m->dim)
        T(wup, "ffn_up", m->ffn, m->dim)
        T(wdown, "ffn_down", m->dim, m->ffn)
        V(attn_norm, "attn_norm", m->dim, 0)
        V(ffn_norm, "ffn_norm", m->dim, 0)
        V(bq, "attn_q.bias", qd, 1)
        V(bk, "attn_k.bias", kvd, 1)
        V(bv, "attn_v.bias", kvd, 1)
    }
#undef T
#undef V
    m->pool = rz_pool_new(threads);
    if (!m->pool) {
        PyErr_NoMemory();
        return -1;
    }
    pthread_mutex_init(&self->lock, NULL);
    self->ready = 1;
    return 0;
}

static PyObject *Model_get(ModelObject *self, void *which) {
    if (!self->ready) return PyErr_Format(PyExc_RuntimeError, "Model not initialised");
    switch ((intptr_t)which) {
    case 0: return PyUnicode_FromString(self->m.isa->name);
    case 1: return PyLong_FromLong(rz_pool_threads(self->m.pool));
    default: {
        size_t bytes = 0;
        Py_ssize_t n = PyList_GET_SIZE(self->keep);
        for (Py_ssize_t i = 0; i < n; i++) {  /* each distinct tensor once (a tied output is kept twice) */
            PyObject *o = PyList_GET_ITEM(self->keep, i);
            int seen = 0;
            for (Py_ssize_t j = 0; j < i && !seen; j++) seen = PyList_GET_ITEM(self->keep, j) == o;
            if (!seen) bytes += ((TensorObject *)o)->t.group_bytes * (size_t)((TensorObject *)o)->t.groups;
        }
        bytes += (size_t)(2 * self->m.n_layer + 1) * self->m.dim * 4;
        return PyLong_FromSize_t(bytes);
    }
    }
}

static PyGetSetDef Model_getset[] = {
    {"isa", (getter)Model_get, NULL, "instruction set in use", (void *)0},
    {"threads", (getter)Model_get, NULL, "threads of the pool", (void *)1},
    {"weights_bytes", (getter)Model_get, NULL, "bytes of repacked weights and norms", (void *)2},
    {NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ryzanstein.models._native.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Repacked transformer weights and a thread pool.",
    .tp_getset = Model_getset,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

/* ---- Context ----------------------------------------------------------------------------------------- */
typedef struct {
    PyObject_HEAD
    rz_ctx c;
    ModelObject *model;
} ContextObject;

static void Context_dealloc(ContextObject *self) {
    if (self->model) rz_ctx_free(&self->c);
    Py_XDECREF(self->model);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Context_init(ContextObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"model", "n_ctx", "n_layer", NULL};
    ModelObject *model;
    int n_ctx, n_layer = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!i|i", names, &ModelType, &model, &n_ctx, &n_layer)) return -1;
    if (!model->ready || self->model) {
        PyErr_SetString(PyExc_RuntimeError, "bad Context construction");
        return -1;
    }
    if (n_layer <= 0) n_layer = model->m.n_layer;
    if (n_layer > model->m.n_layer || n_ctx < 1) {
        PyErr_Format(PyExc_ValueError, "n_layer must be in 1..%d and n_ctx positive", model->m.n_layer);
        return -1;
    }
    if (rz_ctx_init(&self->c, &model->m, n_ctx, n_layer) != 0) {
        PyErr_NoMemory();
        return -1;
    }
    Py_INCREF(model);
    self->model = model;
    return 0;
}

static PyObject *Context_forward(ContextObject *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"tokens", "pos", "out", "last_only", "feats", "hidden_in", "captured", "hidden_out", NULL};
    PyObject *to, *oo, *io_obj[4] = {Py_None, Py_None, Py_None, Py_None};
    int pos, last_only;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OiOp|OOOO", names, &to, &pos, &oo, &last_only, &io_obj[0],
                                     &io_obj[1], &io_obj[2], &io_obj[3]))
        return NULL;
    if (!self->model) return PyErr_Format(PyExc_RuntimeError, "Context not initialised");
    Py_buffer tb, ob, iob[4];
    if (get_buffer(to, &tb, 0, 4, "tokens") != 0) return NULL;
    const rz_model *m = self->c.m;
    const Py_ssize_t n = tb.len / 4, rows = last_only ? 1 : n, dim = m->dim;
    /* bytes each io buffer needs: feats and hidden_in n rows, captured n rows of n_cap, hidden_out the logits' */
    const Py_ssize_t io_need[4] = {n * m->n_feat * dim * 4, n * dim * 4, n * self->c.n_cap * dim * 4, rows * dim * 4};
    static const char *io_names[4] = {"feats", "hidden_in", "captured", "hidden_out"};
    int have_out = 0, have[4] = {0, 0, 0, 0}, bad = 0;
    if (get_buffer(oo, &ob, 1, rows * m->vocab * 4, "out") != 0)
        bad = 1;
    else
        have_out = 1;
    for (int i = 0; !bad && i < 4; i++) {
        if (io_obj[i] == Py_None) continue;
        if ((i < 2 && !m->mix) || (i == 2 && self->c.n_cap == 0)) {
            PyErr_Format(PyExc_ValueError, "%s: %s", io_names[i],
                         i < 2 ? "only a draft head reads features" : "no capture layers are set (capture())");
            bad = 1;
        } else if (get_buffer(io_obj[i], &iob[i], i >= 2, io_need[i], io_names[i]) != 0) {
            bad = 1;
        } else {
            have[i] = 1;
        }
    }
    int rc = 0;
    if (!bad) {
        rz_io io = {have[0] ? iob[0].buf : NULL, have[1] ? iob[1].buf : NULL, have[2] ? iob[2].buf : NULL,
                    have[3] ? iob[3].buf : NULL};
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&self->model->lock);
        rc = rz_forward_io(&self->c, tb.buf, (int)n, pos, ob.buf, last_only, &io);
        pthread_mutex_unlock(&self->model->lock);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < 4; i++)
        if (have[i]) PyBuffer_Release(&iob[i]);
    if (have_out) PyBuffer_Release(&ob);
    PyBuffer_Release(&tb);
    if (bad) return NULL;
    if (rc == -1) return PyErr_Format(PyExc_ValueError, "positions %d..%d outside the context of %d", pos, pos + (int)n - 1, self->c.n_ctx);
    if (rc == -2) return PyErr_Format(PyExc_ValueError, "a token id is outside the vocabulary");
    if (rc == -3) return PyErr_Format(PyExc_ValueError, "a draft head needs feats or hidden_in");
    Py_RETURN_NONE;
}

static PyObject *Context_capture(ContextObject *self, PyObject *arg) {
    if (!self->model) return PyErr_Format(PyExc_RuntimeError, "Context not initialised");
    PyObject *seq = PySequence_Fast(arg, "capture() takes a sequence of layer indices");
    if (!seq) return NULL;
    int layers[RZ_MAX_CAP], n = (int)PySequence_Fast_GET_SIZE(seq);
    if (n > RZ_MAX_CAP) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "at most %d capture layers", RZ_MAX_CAP);
    }
    for (int i = 0; i < n; i++) layers[i] = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
    Py_DECREF(seq);
    if (PyErr_Occurred()) return NULL;
    if (rz_ctx_set_capture(&self->c, layers, n) != 0)
        return PyErr_Format(PyExc_ValueError, "capture layers must be in 0..%d (below the last)", self->c.n_layer - 2);
    Py_RETURN_NONE;
}

static PyObject *Context_vocab(ContextObject *self, PyObject *arg) {
    if (!self->model) return PyErr_Format(PyExc_RuntimeError, "Context not initialised");
    Py_buffer mb = {0};
    if (arg != Py_None) {
        if (get_buffer(arg, &mb, 0, 0, "mask") != 0) return NULL;
        if (mb.len != self->c.m->output->groups) {
            PyBuffer_Release(&mb);
            return PyErr_Format(PyExc_ValueError, "mask must hold one byte per %d-row output group (%d), got %zd",
                                RZ_GROUP, self->c.m->output->groups, mb.len);
        }
    }
    pthread_mutex_lock(&self->model->lock);
    int rc = rz_ctx_set_vocab(&self->c, arg == Py_None ? NULL : mb.buf);
    pthread_mutex_unlock(&self->model->lock);
    if (arg != Py_None) PyBuffer_Release(&mb);
    if (rc != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *Context_get(ContextObject *self, void *which) {
    if (!self->model) return PyErr_Format(PyExc_RuntimeError, "Context not initialised");
    size_t per_token = (size_t)2 * self->c.n_layer * self->c.kv_dim * 2;
    if ((intptr_t)which == 2) return PyLong_FromLong(self->c.m->output->groups);
    return PyLong_FromSize_t((intptr_t)which == 0 ? per_token * self->c.n_ctx : per_token);
}

static PyObject *Context_phase_times(ContextObject *self, PyObject *args) {
    int reset = 0;
    if (!PyArg_ParseTuple(args, "|p", &reset)) return NULL;
    PyObject *d = PyDict_New();
    for (int i = 0; i < RZ_PHASES; i++) {
        PyObject *v = PyFloat_FromDouble(self->c.phase_s[i]);
        PyDict_SetItemString(d, rz_phase_names[i], v);
        Py_DECREF(v);
        if (reset) self->c.phase_s[i] = 0.0;
    }
    return d;
}

static PyMethodDef Context_methods[] = {
    {"phase_times", (PyCFunction)Context_phase_times, METH_VARARGS, "phase_times(reset=False): seconds per phase of the forwards (per-phase timers)"},
    {"capture", (PyCFunction)Context_capture, METH_O,
     "capture(layers): forwards given `captured` hand back these layers' outputs (residual stream), in order"},
    {"forward", (PyCFunction)(void (*)(void))Context_forward, METH_VARARGS | METH_KEYWORDS,
     "forward(tokens int32, pos, out float32, last_only): logits of the tokens at positions pos.."},
    {"vocab", (PyCFunction)Context_vocab, METH_O,
     "vocab(mask uint8 | None): compute only the output groups (16 ids each) whose mask byte is set; the other "
     "logits are -inf. None: all of them"},
    {NULL},
};

static PyGetSetDef Context_getset[] = {
    {"kv_bytes", (getter)Context_get, NULL, "bytes of the KV cache", (void *)0},
    {"kv_bytes_per_token", (getter)Context_get, NULL, "KV bytes per position", (void *)1},
    {"output_groups", (getter)Context_get, NULL, "16-row groups of the output layer", (void *)2},
    {NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ryzanstein.models._native.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A KV cache over a Model's weights.",
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
    .tp_init = (initproc)Context_init,
    .tp_new = PyType_GenericNew,
};

/* ---- forward_batch ----------------------------------------------------------------------------------- */
/* forward_batch(seqs, out): seqs a sequence of (context, tokens int32, pos, out_rows, captured or None), all
 * contexts of one model; out float32 with sum(out_rows) rows of the vocabulary, filled in sequence order. */
static PyObject *py_forward_batch(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *seq_obj, *oo;
    if (!PyArg_ParseTuple(args, "OO", &seq_obj, &oo)) return NULL;
    PyObject *items = PySequence_Fast(seq_obj, "seqs must be a sequence");
    if (!items) return NULL;
    const Py_ssize_t n_seq = PySequence_Fast_GET_SIZE(items);
    if (n_seq < 1 || n_seq > RZ_MAX_SEQ) {
        Py_DECREF(items);
        return PyErr_Format(PyExc_ValueError, "a batch holds 1..%d sequences, got %zd", RZ_MAX_SEQ, n_seq);
    }
    rz_batch_seq seqs[RZ_MAX_SEQ];
    Py_buffer tb[RZ_MAX_SEQ], cb[RZ_MAX_SEQ], ob;
    int have_t = 0, have_c[RZ_MAX_SEQ] = {0}, have_out = 0, bad = 0;
    Py_ssize_t total_rows = 0;
    ModelObject *model = NULL;
    for (Py_ssize_t i = 0; i < n_seq && !bad; i++) {
        PyObject *ctx_o, *to, *co;
        int pos, out_rows;
        PyObject *it = PySequence_Fast_GET_ITEM(items, i);
        if (!PyArg_ParseTuple(it, "O!OiiO", &ContextType, &ctx_o, &to, &pos, &out_rows, &co)) {
            bad = 1;
            break;
        }
        ContextObject *ctx = (ContextObject *)ctx_o;
        if (!ctx->model) {
            PyErr_SetString(PyExc_RuntimeError, "Context not initialised");
            bad = 1;
            break;
        }
        if (model && ctx->model != model) {
            PyErr_SetString(PyExc_ValueError, "a batch's contexts must share one model");
            bad = 1;
            break;
        }
        model = ctx->model;
        if (get_buffer(to, &tb[i], 0, 4, "tokens") != 0) {
            bad = 1;
            break;
        }
        have_t = (int)i + 1;
        const Py_ssize_t n = tb[i].len / 4;
        if (out_rows < 0 || out_rows > n) {
            PyErr_Format(PyExc_ValueError, "out_rows %d of a sequence of %zd tokens", out_rows, n);
            bad = 1;
            break;
        }
        total_rows += out_rows;
        rz_io io = {0};
        if (co != Py_None) {
            if (ctx->c.n_cap == 0) {
                PyErr_SetString(PyExc_ValueError, "captured: no capture layers are set (capture())");
                bad = 1;
                break;
            }
            if (get_buffer(co, &cb[i], 1, n * ctx->c.n_cap * ctx->c.m->dim * 4, "captured") != 0) {
                bad = 1;
                break;
            }
            have_c[i] = 1;
            io.captured = cb[i].buf;
        }
        seqs[i] = (rz_batch_seq){&ctx->c, tb[i].buf, (int)n, pos, out_rows, io};
    }
    if (!bad) {
        if (get_buffer(oo, &ob, 1, total_rows * model->m.vocab * 4, "out") != 0)
            bad = 1;
        else
            have_out = 1;
    }
    int rc = 0;
    if (!bad) {
        Py_BEGIN_ALLOW_THREADS
        pthread_mutex_lock(&model->lock);
        rc = rz_forward_batch(seqs, (int)n_seq, ob.buf);
        pthread_mutex_unlock(&model->lock);
        Py_END_ALLOW_THREADS
    }
    for (int i = 0; i < have_t; i++) {
        PyBuffer_Release(&tb[i]);
        if (have_c[i]) PyBuffer_Release(&cb[i]);
    }
    if (have_out) PyBuffer_Release(&ob);
    Py_DECREF(items);
    if (bad) return NULL;
    if (rc == -1) return PyErr_Format(PyExc_ValueError, "positions outside a sequence's context");
    if (rc == -2) return PyErr_Format(PyExc_ValueError, "a token id is outside the vocabulary");
    if (rc == -3) return PyErr_Format(PyExc_ValueError, "a draft head runs alone, with feats or hidden_in");
    if (rc == -4) return PyErr_Format(PyExc_ValueError, "a batch's contexts must have the same layers");
    Py_RETURN_NONE;
}

/* ---- module ------------------------------------------------------------------------------------------ */
static PyObject *py_isa_names(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    PyObject *out = PyList_New(0);
#if defined(__x86_64__)
    const rz_isa *all[] = {&rz_isa_avx512, &rz_isa_avx2, &rz_isa_ref};
#else
    const rz_isa *all[] = {&rz_isa_ref};
#endif
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (rz_isa_supported(all[i])) {
            PyObject *s = PyUnicode_FromString(all[i]->name);
            PyList_Append(out, s);
            Py_DECREF(s);
        }
    return out;
}

static PyObject *py_best_isa(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    return PyUnicode_FromString(rz_isa_best()->name);
}

static PyObject *py_type_name(PyObject *self, PyObject *arg) {
    (void)self;
    return PyUnicode_FromString(rz_type_name((int)PyLong_AsLong(arg)));
}

static PyObject *py_block_cols(PyObject *self, PyObject *arg) {
    (void)self;
    return PyLong_FromLong(rz_block_cols((int)PyLong_AsLong(arg)));
}

static PyObject *py_src_row_bytes(PyObject *self, PyObject *args) {
    (void)self;
    int type, cols;
    if (!PyArg_ParseTuple(args, "ii", &type, &cols)) return NULL;
    return PyLong_FromSize_t(rz_src_row_bytes(type, cols));
}

static PyMethodDef module_methods[] = {
    {"isa_names", py_isa_names, METH_NOARGS, "instruction sets this CPU supports, best first"},
    {"best_isa", py_best_isa, METH_NOARGS, "the instruction set used by default"},
    {"type_name", py_type_name, METH_O, "name of a GGML type id (\"?\" if unsupported)"},
    {"block_cols", py_block_cols, METH_O, "columns per block of a supported type, else 0"},
    {"src_row_bytes", py_src_row_bytes, METH_VARARGS, "bytes of one GGUF row of a type"},
    {"forward_batch", py_forward_batch, METH_VARARGS,
     "forward_batch(seqs, out): one forward over several contexts' rows; seqs of (context, tokens, pos, "
     "out_rows, captured|None); logits rows into out in order"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native", "Ryzanstein's native CPU kernels and transformer.", -1, module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&TensorType) < 0 || PyType_Ready(&ModelType) < 0 || PyType_Ready(&ContextType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    Py_INCREF(&TensorType);
    Py_INCREF(&ModelType);
    Py_INCREF(&ContextType);
    PyModule_AddObject(m, "Tensor", (PyObject *)&TensorType);
    PyModule_AddObject(m, "Model", (PyObject *)&ModelType);
    PyModule_AddObject(m, "Context", (PyObject *)&ContextType);
    return m;
}
