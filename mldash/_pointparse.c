/* Plain series lines into columns, for DataFrames (mldash/_frames.py).
 *
 * A series' data.jsonl holds one point a line, as the writer makes it:
 *     [1796139444062,{"value":0.3333333333333333,"step":2}]
 * parse_points() reads such lines into 8-byte columns (the timestamp, then one
 * per field) without the GIL, and stops at the first line that is not plain
 * with the given field names in that order: any other shape, a name, text,
 * null, a bool, a tag, an integer beyond 64 bits, a number it cannot convert
 * exactly. The caller reads what is left some other way, so this file never has
 * to be complete, only exact: every value it gives is the one orjson.loads()
 * gives for the same text.
 *
 * Decimal to double conversion is exact: a decimal with at most 19 significant
 * digits and an exponent within +-27 is an integer m times 5^e times 2^e, and
 * m * 5^e (or m / 5^e, scaled) fits in 128 bits, so the quotient or product is
 * rounded to 53 bits by hand, half to even, with the remainder as sticky bit.
 * Where both m and 10^e are exact doubles one multiplication or division does
 * it (Clinger's fast path). The rare other numbers go to the C library's
 * strtod_l (correctly rounded) in the "C" locale, where it has one; a number
 * that over- or underflows a double stops the parse.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <float.h>
#include <locale.h>
#include <math.h>
#include <stdlib.h>
#if defined(__APPLE__)
#include <xlocale.h>
#endif
#include <stdint.h>
#include <string.h>

#define KIND_UNSET 0
#define KIND_INT 1
#define KIND_FLOAT 2

/* Field names per line at most (more: the caller's slower path). */
#define MAX_KEYS 256

/* Exponent digits at most (orjson writes at most three). */
#define MAX_EXP_DIGITS 5

static const double exact_pow10[] = {
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11,
    1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
};

#define MAX_POW5 27
static uint64_t pow5[MAX_POW5 + 1];

typedef enum { NUM_BAD, NUM_INT, NUM_FLOAT } num_kind;

/* Eight ASCII digits at once (Lemire's SWAR), where a uint64 is little-endian. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1
static inline uint64_t
load8(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline int
eight_digits(uint64_t v)
{
    return !(((v + 0x4646464646464646ULL) | (v - 0x3030303030303030ULL)) & 0x8080808080808080ULL);
}

static inline uint64_t
eight_digits_value(uint64_t v)
{
    v -= 0x3030303030303030ULL;
    v = v * 10 + (v >> 8);
    return (((v & 0x000000FF000000FFULL) * 0x000F424000000064ULL) +
            (((v >> 16) & 0x000000FF000000FFULL) * 0x0000271000000001ULL)) >> 32;
}
#else
#define SWAR 0
#endif

typedef union {
    int64_t i;
    double d;
} cell;

#ifdef __SIZEOF_INT128__
typedef unsigned __int128 u128;

static int
bit_length(u128 v)
{
    uint64_t hi = (uint64_t)(v >> 64);
    if (hi)
        return 128 - __builtin_clzll(hi);
    uint64_t lo = (uint64_t)v;
    return lo ? 64 - __builtin_clzll(lo) : 0;
}

/* mant * 2^e for mant < 2^54 and a result in the normal range, by its bits. */
static double
make_double(uint64_t mant, int e)
{
    if (!mant)
        return 0.0;
    int top = 63 - __builtin_clzll(mant);  /* shift the leading 1 to bit 52 */
    if (top > 52) {
        mant >>= top - 52;  /* callers shift only zero bits out */
        e += top - 52;
    } else {
        mant <<= 52 - top;
        e -= 52 - top;
    }
    int biased = e + 52 + 1023;
    if (biased <= 0 || biased >= 2047)
        return ldexp((double)(mant), e);
    uint64_t bits = ((uint64_t)biased << 52) | (mant & (((uint64_t)1 << 52) - 1));
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* q * 2^scale, q rounded to 53 bits half to even; rest_nonzero: bits below q. */
static double
round_to_double(u128 q, int scale, int rest_nonzero)
{
    int bits = bit_length(q);
    if (bits <= 53 && !rest_nonzero)
        return make_double((uint64_t)q, scale);
    int shift = bits - 53;
    if (shift <= 0)  /* only with rest_nonzero, which callers avoid by scaling */
        return NAN;
    u128 mant = q >> shift;
    u128 low = q & (((u128)1 << shift) - 1);
    u128 half = (u128)1 << (shift - 1);
    if (low > half || (low == half && (rest_nonzero || (mant & 1))))
        mant += 1;  /* 2^53 after carrying: its low bit is zero, exact */
    return make_double((uint64_t)mant, scale + shift);
}
#endif

/* m * 10^e10 as the nearest double, or NAN where it is not done here. */
static double
decimal_to_double(uint64_t m, int e10)
{
    if (m == 0)
        return 0.0;
#if defined(FLT_EVAL_METHOD) && FLT_EVAL_METHOD == 0
    if (m <= ((uint64_t)1 << 53) && e10 >= -22 && e10 <= 22)
        return e10 >= 0 ? (double)m * exact_pow10[e10] : (double)m / exact_pow10[-e10];
#endif
#ifdef __SIZEOF_INT128__
    if (e10 >= 0 && e10 <= MAX_POW5)
        return round_to_double((u128)m * pow5[e10], e10, 0);
    if (e10 < 0 && -e10 <= MAX_POW5) {
        int k = -e10;
        uint64_t d = pow5[k];
        /* scale so the quotient has at least 55 bits: two below the 53 kept */
        int s = 55 + (64 - __builtin_clzll(d)) - (64 - __builtin_clzll(m));
        if (s < 0)
            s = 0;
        u128 n = (u128)m << s;
        u128 q = n / d;
        int rest = (n - q * d) != 0;
        return round_to_double(q, -s - k, rest);
    }
#endif
    return NAN;
}

/* The C library's conversion, correctly rounded and in the "C" locale (a
 * decimal point whatever the process's locale), for the rare numbers the exact
 * path above does not take: more than 19 digits, or an exponent past 27. Text
 * already checked as a JSON number; NAN where it over- or underflows. */
#if defined(__GLIBC__) || defined(__APPLE__)
#define C_LIBRARY_DOUBLES 1
static locale_t c_locale;
#define MAX_NUMBER_TEXT 64
#else
#define C_LIBRARY_DOUBLES 0
#endif

static double
text_to_double(const char *start, const char *stop)
{
#if C_LIBRARY_DOUBLES
    char text[MAX_NUMBER_TEXT + 1];
    size_t size = (size_t)(stop - start);
    if (!c_locale || size > MAX_NUMBER_TEXT)
        return NAN;
    memcpy(text, start, size);
    text[size] = 0;
    char *after;
    errno = 0;
    double v = strtod_l(text, &after, c_locale);
    if (after != text + size || errno == ERANGE || !isfinite(v) || v == 0.0 || fabs(v) < DBL_MIN)
        return NAN;  /* zero is the exact path's; a subnormal or an overflow: orjson's call */
    return v;
#else
    (void)start;
    (void)stop;
    return NAN;
#endif
}

/* One JSON number at *pp (before end): its kind, and its value in *out. */
static num_kind
parse_number(const char **pp, const char *end, cell *out)
{
    const char *start = *pp, *p = start;
    int neg = 0, inexact = 0;  /* inexact: digits beyond the 19 kept in m */
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end)
        return NUM_BAD;
    uint64_t m = 0;
    int digits = 0;  /* significant digits in m */
    int e10 = 0;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
#if SWAR
            if (digits <= 11 && end - p >= 8 && eight_digits(load8(p))) {
                m = m * 100000000 + eight_digits_value(load8(p));
                digits += 8;
                p += 8;
                continue;
            }
#endif
            if (digits == 19) {
                inexact = 1;
                e10++;
            } else {
                m = m * 10 + (uint64_t)(*p - '0');
                digits++;
            }
            p++;
        }
    } else {
        return NUM_BAD;
    }
    int is_float = 0;
    if (p < end && *p == '.') {
        is_float = 1;
        p++;
        if (p >= end || *p < '0' || *p > '9')
            return NUM_BAD;
        while (p < end && *p >= '0' && *p <= '9') {
#if SWAR
            if (m && digits <= 11 && end - p >= 8 && eight_digits(load8(p))) {
                m = m * 100000000 + eight_digits_value(load8(p));
                digits += 8;
                e10 -= 8;
                p += 8;
                continue;
            }
#endif
            if (digits == 19) {
                inexact |= *p != '0';
            } else if (m || *p != '0') {
                m = m * 10 + (uint64_t)(*p - '0');
                digits++;
                e10--;
            } else {
                e10--;
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_float = 1;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        int exp = 0, n = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (++n > MAX_EXP_DIGITS)
                return NUM_BAD;
            exp = exp * 10 + (*p - '0');
            p++;
        }
        if (!n)
            return NUM_BAD;
        e10 += eneg ? -exp : exp;
    }
    if (!is_float) {
        if (inexact || (neg ? m > (uint64_t)INT64_MAX + 1 : m > (uint64_t)INT64_MAX))
            return NUM_BAD;  /* the caller's path keeps it as a Python int */
        out->i = neg ? (int64_t)(0 - m) : (int64_t)m;
        *pp = p;
        return NUM_INT;
    }
    double v = inexact ? NAN : decimal_to_double(m, e10);
    if (isnan(v)) {
        v = text_to_double(start, p);
        if (isnan(v))
            return NUM_BAD;
        out->d = v;
        *pp = p;
        return NUM_FLOAT;
    }
    out->d = neg ? -v : v;
    *pp = p;
    return NUM_FLOAT;
}

typedef struct {
    const char *name;
    Py_ssize_t size;
} key;

/* Field names are short: a loop beats a call to memcmp. */
static inline int
same(const char *a, const char *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (a[i] != b[i])
            return 0;
    return 1;
}

/* Lines from data[0:size] into columns[c * cap + row]; returns the lines read
 * and sets *used to the bytes they took. Runs without the GIL. */
static Py_ssize_t
parse_lines(const char *data, Py_ssize_t size, const key *keys, int nkeys, cell *columns,
            Py_ssize_t cap, unsigned char *kinds, Py_ssize_t *used)
{
    const char *p = data, *end = data + size;
    Py_ssize_t row = 0;
    while (row < cap && p < end) {
        const char *q = p;
        cell value;
        if (*q++ != '[')
            break;
        if (parse_number(&q, end, &value) != NUM_INT)
            break;
        columns[row] = value;
        if (end - q < 2 || q[0] != ',' || q[1] != '{')
            break;
        q += 2;
        int j;
        for (j = 0; j < nkeys; j++) {
            if (j) {
                if (q >= end || *q != ',')
                    break;
                q++;
            }
            if (end - q < keys[j].size + 1 || !same(q, keys[j].name, keys[j].size) || q[keys[j].size] != ':')
                break;
            q += keys[j].size + 1;
            num_kind got = parse_number(&q, end, &value);
            if (got == NUM_BAD)
                break;
            if (kinds[j] == KIND_UNSET)
                kinds[j] = got == NUM_INT ? KIND_INT : KIND_FLOAT;
            if (kinds[j] == KIND_INT && got == NUM_FLOAT)
                break;  /* a float in an int column: the caller's path widens it */
            if (kinds[j] == KIND_FLOAT && got == NUM_INT) {
                if (value.i > ((int64_t)1 << 53) || value.i < -((int64_t)1 << 53))
                    break;  /* not exact as a double */
                value.d = (double)value.i;
            }
            columns[(Py_ssize_t)(j + 1) * cap + row] = value;
        }
        if (j < nkeys || end - q < 3 || q[0] != '}' || q[1] != ']' || q[2] != '\n')
            break;
        p = q + 3;
        row++;
    }
    *used = p - data;
    return row;
}

PyDoc_STRVAR(parse_points_doc,
"parse_points(data, keys, out, kinds) -> (lines, used)\n\n"
"Plain lines from the start of ``data`` into ``out``, a writable buffer of\n"
"(1 + len(keys)) columns of 8-byte cells, each len(out) // 8 // (1 + len(keys))\n"
"long: the timestamps (int64), then each field in the order of ``keys`` (their\n"
"JSON text, quotes included). ``kinds`` (a bytearray, one per key) says each\n"
"column's type: 0 not yet known (set by the first value), 1 int64, 2 float64.\n"
"Stops at the first line that is not plain, or when ``out`` is full.");

static PyObject *
parse_points(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "parse_points() takes 4 arguments");
        return NULL;
    }
    PyObject *names = args[1];
    if (!PyTuple_CheckExact(names)) {
        PyErr_SetString(PyExc_TypeError, "keys must be a tuple of bytes");
        return NULL;
    }
    Py_ssize_t nkeys = PyTuple_GET_SIZE(names);
    if (nkeys < 1 || nkeys > MAX_KEYS) {
        PyErr_Format(PyExc_ValueError, "keys must hold 1 to %d names", MAX_KEYS);
        return NULL;
    }
    key keys[MAX_KEYS];
    for (Py_ssize_t j = 0; j < nkeys; j++) {
        PyObject *name = PyTuple_GET_ITEM(names, j);
        if (!PyBytes_CheckExact(name)) {
            PyErr_SetString(PyExc_TypeError, "keys must be a tuple of bytes");
            return NULL;
        }
        /* the tuple holds each (immutable) bytes for as long as this call */
        keys[j].name = PyBytes_AS_STRING(name);
        keys[j].size = PyBytes_GET_SIZE(name);
    }
    Py_buffer data, out, kinds;
    if (PyObject_GetBuffer(args[0], &data, PyBUF_SIMPLE) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[2], &out, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&data);
        return NULL;
    }
    if (PyObject_GetBuffer(args[3], &kinds, PyBUF_WRITABLE) < 0) {
        PyBuffer_Release(&out);
        PyBuffer_Release(&data);
        return NULL;
    }
    PyObject *result = NULL;
    if (kinds.len != nkeys) {
        PyErr_SetString(PyExc_ValueError, "kinds must hold one byte per key");
        goto done;
    }
    unsigned char local_kinds[MAX_KEYS];
    memcpy(local_kinds, kinds.buf, (size_t)nkeys);
    for (Py_ssize_t j = 0; j < nkeys; j++) {
        if (local_kinds[j] > KIND_FLOAT) {
            PyErr_SetString(PyExc_ValueError, "a kind must be 0, 1 or 2");
            goto done;
        }
    }
    if ((uintptr_t)out.buf % sizeof(cell)) {
        PyErr_SetString(PyExc_ValueError, "out must be aligned to 8 bytes");
        goto done;
    }
    Py_ssize_t cap = out.len / (Py_ssize_t)sizeof(cell) / (1 + nkeys);
    Py_ssize_t lines, used;
    /* The buffers stay exported (unresizable) while the GIL is released. */
    Py_BEGIN_ALLOW_THREADS
    lines = parse_lines((const char *)data.buf, data.len, keys, (int)nkeys, (cell *)out.buf, cap,
                        local_kinds, &used);
    Py_END_ALLOW_THREADS
    memcpy(kinds.buf, local_kinds, (size_t)nkeys);
    result = Py_BuildValue("(nn)", lines, used);
done:
    PyBuffer_Release(&kinds);
    PyBuffer_Release(&out);
    PyBuffer_Release(&data);
    return result;
}

static PyMethodDef methods[] = {
    {"parse_points", (PyCFunction)(void (*)(void))parse_points, METH_FASTCALL, parse_points_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "mldash._pointparse",
    "Plain series lines into columns (see _pointparse.c).",
    -1,
    methods,
};

PyMODINIT_FUNC
PyInit__pointparse(void)
{
    pow5[0] = 1;
    for (int i = 1; i <= MAX_POW5; i++)
        pow5[i] = pow5[i - 1] * 5;
#if C_LIBRARY_DOUBLES
    c_locale = newlocale(LC_ALL_MASK, "C", (locale_t)0);  /* 0 on failure: those numbers are refused */
#endif
    return PyModule_Create(&module_def);
}
