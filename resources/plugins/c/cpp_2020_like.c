/*
 * cpp_2020_like.c -- behaves at the ABI level like a plugin built in 2020 with the C++ SDK
 * (proxy-wasm-cpp-sdk) of the time. See README.md.
 *
 * What it copies (ABI doc sections 1.1, 1.2, 3.3; operator reference on pluginName):
 *  - exports proxy_abi_version_0_1_0 TOGETHER WITH the 0.2-style headers callbacks
 *    proxy_on_request_headers / proxy_on_response_headers(context_id, headers,
 *    end_of_stream): three parameters, where the 0.1.0 text has two;
 *  - reads its configuration with 0.1.0's proxy_get_configuration during on_configure;
 *  - registers its context factories by root id, the SDK way (RegisterContextFactory):
 *    under "" unless a name is given. On a root context it looks up the root id the host
 *    gives as the property plugin_root_id; with no root factory for it, the SDK's default
 *    root context runs silently. On a stream context with no factory for its root's id it
 *    logs the SDK's own error, "no context factory for root_id: <id>", and every callback
 *    of that stream answers Continue (the SDK's default).
 *  - is a WASI reactor (_initialize) that exports malloc, as the Emscripten builds did.
 *
 * With root id "": request header x-cpp-eos: <end_of_stream>, response header
 * x-cpp-response-eos: <end_of_stream>, info log "cpp_2020_like: request headers n=<n>
 * end_of_stream=<eos>" and "cpp_2020_like: configuration <bytes>".
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_util.h"
#include "proxy_abi.h"

/* 0.1.0 only (ABI doc section 2.1); not in proxy_abi.h, which holds the 0.2.x set. */
PROXY_IMPORT(proxy_get_configuration)
uint32_t proxy_get_configuration(char **ret_ptr, uint32_t *ret_size);

PROXY_EXPORT(proxy_abi_version_0_1_0) void cpp_abi_version_0_1_0(void) {}

PROXY_EXPORT(malloc) void *cpp_malloc(uint32_t size) { return malloc(size ? size : 1); }

__attribute__((format(printf, 2, 3))) static void log_at(uint32_t level, const char *fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n >= sizeof buf)
        n = (int)sizeof buf - 1;
    proxy_log(level, buf, (uint32_t)n);
}

/* -- the SDK's context registry ------------------------------------------------------------- */

/* The factories this plugin registers: the SDK default, root id "" (no name given). */
static const char *const registered_root_ids[] = {""};

#define MAX_CONTEXTS 256

struct context {
    uint32_t id;
    uint32_t root; /* 0 for a root context */
    int is_default; /* no factory matched: the SDK's default context (does nothing) */
    char root_id[64];
};

static struct context contexts[MAX_CONTEXTS];

static struct context *find(uint32_t id) {
    for (int i = 0; i < MAX_CONTEXTS; i++)
        if (contexts[i].id == id)
            return &contexts[i];
    return NULL;
}

static struct context *slot(uint32_t id) {
    struct context *c = find(0);
    if (c == NULL)
        __builtin_trap(); /* more live contexts than the emulation holds */
    memset(c, 0, sizeof *c);
    c->id = id;
    return c;
}

static int registered(const char *root_id) {
    for (size_t i = 0; i < sizeof registered_root_ids / sizeof registered_root_ids[0]; i++)
        if (strcmp(registered_root_ids[i], root_id) == 0)
            return 1;
    return 0;
}

PROXY_EXPORT(proxy_on_context_create) void cpp_on_context_create(uint32_t id, uint32_t parent) {
    struct context *c = slot(id);
    c->root = parent;
    if (parent == 0) {
        /* ensureRootContext: the root id is the property plugin_root_id */
        char *value = NULL;
        uint32_t size = 0;
        const char path[] = "plugin_root_id";
        if (proxy_get_property(path, sizeof path - 1, &value, &size) == PS_OK)
            copy_str(c->root_id, sizeof c->root_id, value, size);
        free(value);
        c->is_default = !registered(c->root_id); /* silent: the default root context */
        return;
    }
    /* ensureContext: a stream context needs a factory for its root's id */
    struct context *root = find(parent);
    const char *root_id = root != NULL ? root->root_id : "";
    copy_str(c->root_id, sizeof c->root_id, root_id, (uint32_t)strlen(root_id));
    if (!registered(root_id)) {
        log_at(LL_ERROR, "no context factory for root_id: %s", root_id);
        c->is_default = 1;
    }
}

PROXY_EXPORT(proxy_on_vm_start) uint32_t cpp_on_vm_start(uint32_t root, uint32_t size) {
    (void)root;
    (void)size;
    return 1;
}

PROXY_EXPORT(proxy_on_configure) uint32_t cpp_on_configure(uint32_t root, uint32_t size) {
    struct context *c = find(root);
    if (c == NULL || c->is_default)
        return 1; /* the default root context accepts anything */
    char *conf = NULL;
    uint32_t len = 0;
    uint32_t st = proxy_get_configuration(&conf, &len);
    if (st != PS_OK) {
        log_at(LL_ERROR, "cpp_2020_like: proxy_get_configuration: %s", status_name(st));
        return 0;
    }
    if (len != size) {
        log_at(LL_ERROR, "cpp_2020_like: configuration size %u, announced %u", len, size);
        return 0;
    }
    log_at(LL_INFO, "cpp_2020_like: configuration %.*s", (int)len, conf ? conf : "");
    free(conf);
    return 1;
}

static uint32_t on_headers(uint32_t id, uint32_t headers, uint32_t end_of_stream,
                           uint32_t map, const char *key, const char *what) {
    struct context *c = find(id);
    if (c == NULL || c->is_default)
        return 0; /* Continue, as the SDK's default Context */
    char value[2] = {end_of_stream ? '1' : '0', 0};
    uint32_t st = proxy_add_header_map_value(map, key, (uint32_t)strlen(key), value, 1);
    log_at(LL_INFO, "cpp_2020_like: %s headers n=%u end_of_stream=%u (%s)", what, headers,
           end_of_stream, status_name(st));
    return 0;
}

PROXY_EXPORT(proxy_on_request_headers)
uint32_t cpp_on_request_headers(uint32_t id, uint32_t headers, uint32_t end_of_stream) {
    return on_headers(id, headers, end_of_stream, MAP_HTTP_REQUEST_HEADERS, "x-cpp-eos",
                      "request");
}

PROXY_EXPORT(proxy_on_response_headers)
uint32_t cpp_on_response_headers(uint32_t id, uint32_t headers, uint32_t end_of_stream) {
    return on_headers(id, headers, end_of_stream, MAP_HTTP_RESPONSE_HEADERS,
                      "x-cpp-response-eos", "response");
}

PROXY_EXPORT(proxy_on_done) uint32_t cpp_on_done(uint32_t id) {
    (void)id;
    return 1;
}

PROXY_EXPORT(proxy_on_delete) void cpp_on_delete(uint32_t id) {
    struct context *c = find(id);
    if (c != NULL)
        c->id = 0;
}
