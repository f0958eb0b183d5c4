/*
 * plugin_util.h -- small helpers shared by the C conformance plugins: the pairs wire format
 * (ABI doc section 5.1), a string lookup in a flat JSON object, status names. Header-only,
 * no host calls: each plugin decides how to react to statuses (that is what it emulates).
 */
#ifndef WASMDESK_PLUGIN_UTIL_H
#define WASMDESK_PLUGIN_UTIL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline const char *status_name(uint32_t s) {
    static const char *const names[] = {
        "OK", "NOT_FOUND", "BAD_ARGUMENT", "SERIALIZATION_FAILURE", "PARSE_FAILURE",
        "BAD_EXPRESSION", "INVALID_MEMORY_ACCESS", "EMPTY", "CAS_MISMATCH", "RESULT_MISMATCH",
        "INTERNAL_FAILURE", "BROKEN_CONNECTION", "UNIMPLEMENTED",
    };
    return s < sizeof(names) / sizeof(names[0]) ? names[s] : "UNKNOWN_STATUS";
}

static inline uint32_t rd_u32(const char *p) {
    const unsigned char *u = (const unsigned char *)p;
    return (uint32_t)u[0] | ((uint32_t)u[1] << 8) | ((uint32_t)u[2] << 16) | ((uint32_t)u[3] << 24);
}

static inline void wr_u32(char *p, uint32_t v) {
    p[0] = (char)(v & 0xff);
    p[1] = (char)((v >> 8) & 0xff);
    p[2] = (char)((v >> 16) & 0xff);
    p[3] = (char)((v >> 24) & 0xff);
}

/* -- pairs ---------------------------------------------------------------------------------- */

#define MAX_PAIRS 64

struct pair {
    const char *key;
    uint32_t key_len;
    const char *value;
    uint32_t value_len;
};

struct pairs {
    uint32_t n;
    struct pair p[MAX_PAIRS];
};

/* Decode a serialized map; returns 0 on malformed input (an SDK would crash on it).
 * data == NULL / size == 0 is the empty map. */
static inline int pairs_decode(const char *data, uint32_t size, struct pairs *out) {
    out->n = 0;
    if (data == NULL || size == 0)
        return 1;
    if (size < 4)
        return 0;
    uint32_t n = rd_u32(data);
    if (n > MAX_PAIRS || 4u + 8u * n > size)
        return 0;
    uint32_t pos = 4 + 8 * n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t kl = rd_u32(data + 4 + 8 * i), vl = rd_u32(data + 8 + 8 * i);
        if ((uint64_t)pos + kl + 1 + vl + 1 > size)
            return 0;
        if (data[pos + kl] != 0 || data[pos + kl + 1 + vl] != 0)
            return 0;
        out->p[i].key = data + pos;
        out->p[i].key_len = kl;
        out->p[i].value = data + pos + kl + 1;
        out->p[i].value_len = vl;
        pos += kl + 1 + vl + 1;
    }
    out->n = n;
    return pos == size;
}

/* Encode NUL-terminated key/value strings (kv[2*i], kv[2*i+1]) into a malloc'd buffer. */
static inline char *pairs_encode(const char *const *kv, uint32_t n, uint32_t *out_size) {
    uint32_t size = 4 + 8 * n;
    for (uint32_t i = 0; i < n; i++)
        size += (uint32_t)strlen(kv[2 * i]) + 1 + (uint32_t)strlen(kv[2 * i + 1]) + 1;
    char *buf = (char *)malloc(size);
    if (buf == NULL)
        return NULL;
    wr_u32(buf, n);
    uint32_t pos = 4 + 8 * n;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t kl = (uint32_t)strlen(kv[2 * i]), vl = (uint32_t)strlen(kv[2 * i + 1]);
        wr_u32(buf + 4 + 8 * i, kl);
        wr_u32(buf + 8 + 8 * i, vl);
        memcpy(buf + pos, kv[2 * i], kl + 1);
        pos += kl + 1;
        memcpy(buf + pos, kv[2 * i + 1], vl + 1);
        pos += vl + 1;
    }
    *out_size = size;
    return buf;
}

/* -- configuration ------------------------------------------------------------------------- */

/* The string value of "key" in a flat JSON object (no escapes inside the value), copied
 * into out (NUL-terminated). Returns 1 if found. Good enough for {"scenario": "tick"}. */
static inline int json_string_field(const char *json, uint32_t len, const char *key, char *out,
                                    uint32_t out_size) {
    uint32_t kl = (uint32_t)strlen(key);
    if (json == NULL || out_size == 0)
        return 0;
    for (uint32_t i = 0; i + kl + 2 <= len; i++) {
        if (json[i] != '"' || memcmp(json + i + 1, key, kl) != 0 || json[i + 1 + kl] != '"')
            continue;
        uint32_t j = i + kl + 2;
        while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\n' || json[j] == '\r'))
            j++;
        if (j >= len || json[j] != ':')
            continue;
        j++;
        while (j < len && (json[j] == ' ' || json[j] == '\t' || json[j] == '\n' || json[j] == '\r'))
            j++;
        if (j >= len || json[j] != '"')
            return 0;
        j++;
        uint32_t o = 0;
        while (j < len && json[j] != '"' && o + 1 < out_size)
            out[o++] = json[j++];
        out[o] = 0;
        return 1;
    }
    return 0;
}

/* Copy (data, len) into out as a NUL-terminated string, truncated to fit. */
static inline void copy_str(char *out, uint32_t out_size, const char *data, uint32_t len) {
    if (out_size == 0)
        return;
    if (len >= out_size)
        len = out_size - 1;
    if (len)
        memcpy(out, data, len);
    out[len] = 0;
}

#endif /* WASMDESK_PLUGIN_UTIL_H */
