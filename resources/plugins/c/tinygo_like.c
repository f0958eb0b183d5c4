/*
 * tinygo_like.c -- behaves at the ABI level like a plugin built with TinyGo (-target=wasi,
 * -scheduler=none) and the Go Proxy-Wasm SDK (tetratelabs/proxy-wasm-go-sdk). See README.md.
 *
 * What it copies (ABI doc sections 1.1, 1.3, 1.4, 2.3, 2.5, 3.4):
 *  - exports proxy_abi_version_0_2_0 (the Go SDKs' marker, not 0.2.1);
 *  - is a WASI *command*: exports _start and no _initialize. main() does what the SDK's
 *    proxywasm.SetVMContext does; every callback panics (traps) if main has not run;
 *  - exports BOTH malloc and proxy_on_memory_allocate; each logs once when the host first
 *    allocates through it, and the request gets x-alloc: spec | malloc | spec+malloc;
 *  - imports the WASI functions a TinyGo module imports (clock_time_get, random_get,
 *    fd_write, environ_*, args_*, proc_exit) plus file-system ones it never calls
 *    (fd_prestat_get, path_open, fd_read, fd_seek, fd_close): a host must not refuse it;
 *  - converts statuses to Go errors (no trap on an unexpected status);
 *  - panics if proxy_on_http_call_response, proxy_on_queue_ready or proxy_on_tick get a
 *    first argument that is not a plugin (root) context id, or an unknown callout id, as the
 *    Go SDK does;
 *  - edits bodies the Go SDK way: Replace = (start 0, size 0x7FFFFFFF), Append = (start
 *    0x7FFFFFFF, size 0), Prepend = (start 0, size 0).
 *
 * Scenarios (plugin configuration JSON {"scenario": "..."}): "default", "http_call", "tick",
 * "postpone" (the Go SDK's postpone_requests example: pause every request, resume it from the
 * next tick after proxy_set_effective_context).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_util.h"
#include "proxy_abi.h"

/* -- raw WASI preview-1 imports, declared as TinyGo's runtime and syscall package do ------- */

#define WASI_IMPORT(name) __attribute__((import_module("wasi_snapshot_preview1"), import_name(#name)))

WASI_IMPORT(clock_time_get)
uint32_t tg_clock_time_get(uint32_t clock_id, uint64_t precision, uint64_t *ret_time);
WASI_IMPORT(random_get) uint32_t tg_random_get(void *buf, uint32_t len);
WASI_IMPORT(fd_write)
uint32_t tg_fd_write(uint32_t fd, const void *iovs, uint32_t iovs_len, uint32_t *ret_nwritten);
WASI_IMPORT(fd_prestat_get) uint32_t tg_fd_prestat_get(uint32_t fd, void *ret_prestat);
WASI_IMPORT(path_open)
uint32_t tg_path_open(uint32_t fd, uint32_t dirflags, const char *path, uint32_t path_len,
                      uint32_t oflags, uint64_t rights_base, uint64_t rights_inheriting,
                      uint32_t fdflags, uint32_t *ret_fd);
WASI_IMPORT(fd_read)
uint32_t tg_fd_read(uint32_t fd, const void *iovs, uint32_t iovs_len, uint32_t *ret_nread);
WASI_IMPORT(fd_seek)
uint32_t tg_fd_seek(uint32_t fd, int64_t offset, uint32_t whence, uint64_t *ret_offset);
WASI_IMPORT(fd_close) uint32_t tg_fd_close(uint32_t fd);

/* Never true at run time; keeps the file-system imports in the module, as linking Go's `os`
 * package does, without ever calling them. */
static volatile int touch_files;

static void unused_file_system_calls(void) {
    char prestat[8];
    uint32_t fd = 0, n = 0;
    uint64_t off = 0;
    tg_fd_prestat_get(3, prestat);
    tg_path_open(3, 0, "x", 1, 0, 0, 0, 0, &fd);
    tg_fd_read(fd, NULL, 0, &n);
    tg_fd_seek(fd, 0, 0, &off);
    tg_fd_close(fd);
}

/* -- runtime bits: panics, logging ---------------------------------------------------------- */

struct iovec32 {
    const void *buf;
    uint32_t len;
};

__attribute__((noreturn)) static void go_panic(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg - 1)
        n = sizeof msg - 2;
    msg[n++] = '\n';
    /* TinyGo's runtime prints "panic: ..." to stderr, then traps */
    struct iovec32 iov[2] = {{"panic: ", 7}, {msg, (uint32_t)n}};
    uint32_t written = 0;
    tg_fd_write(2, iov, 2, &written);
    __builtin_trap();
}

static int vm_context_set; /* proxywasm.SetVMContext, called from main() */

static void need_vm_context(const char *callback) {
    if (!vm_context_set)
        go_panic("%s called before main(): proxywasm.SetVMContext has not run", callback);
}

/* Go SDK errors: statuses become errors, never traps. */
static const char *go_error(uint32_t st) {
    switch (st) {
    case PS_OK: return "<nil>";
    case PS_NOT_FOUND: return "error status returned by host: not found";
    case PS_BAD_ARGUMENT: return "error status returned by host: bad argument";
    case PS_EMPTY: return "error status returned by host: empty";
    case PS_CAS_MISMATCH: return "error status returned by host: cas mismatch";
    case PS_INTERNAL_FAILURE: return "error status returned by host: internal failure";
    case PS_UNIMPLEMENTED: return "error status returned by host: unimplemented";
    default: return "unknown status code";
    }
}

__attribute__((format(printf, 1, 2))) static void log_info(const char *fmt, ...) {
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    proxy_log(LL_INFO, msg, (uint32_t)n); /* the Go SDK ignores proxy_log's status */
}

/* -- allocators: TinyGo exports both ------------------------------------------------------------- */

static uint32_t alloc_spec_count, alloc_malloc_count;
static const char *first_allocator = "none";

PROXY_EXPORT(proxy_on_memory_allocate) void *tg_proxy_on_memory_allocate(uint32_t size) {
    if (alloc_spec_count++ == 0) {
        if (alloc_malloc_count == 0)
            first_allocator = "spec";
        log_info("tinygo_like: first allocation through proxy_on_memory_allocate");
    }
    return malloc(size ? size : 1);
}

PROXY_EXPORT(malloc) void *tg_malloc(uint32_t size) {
    if (alloc_malloc_count++ == 0) {
        if (alloc_spec_count == 0)
            first_allocator = "malloc";
        log_info("tinygo_like: first allocation through malloc");
    }
    return malloc(size ? size : 1);
}

PROXY_EXPORT(free) void tg_free(void *p) { free(p); }

/* -- SDK-style wrappers ------------------------------------------------------------------------ */

/* GetHttpRequestHeader & co: (value, error); OK with a null pointer is "not found" too. */
static uint32_t get_header(uint32_t map, const char *key, char *out, uint32_t out_size) {
    char *p = NULL;
    uint32_t n = 0;
    uint32_t st = proxy_get_header_map_value(map, key, (uint32_t)strlen(key), &p, &n);
    out[0] = 0;
    if (st != PS_OK)
        return st;
    if (p == NULL)
        return PS_NOT_FOUND;
    copy_str(out, out_size, p, n);
    free(p);
    return PS_OK;
}

static uint32_t get_map(uint32_t map, struct pairs *out, char **raw) {
    uint32_t n = 0;
    *raw = NULL;
    out->n = 0;
    uint32_t st = proxy_get_header_map_pairs(map, raw, &n);
    if (st != PS_OK)
        return st;
    if (*raw == NULL)
        return PS_NOT_FOUND;
    if (!pairs_decode(*raw, n, out))
        go_panic("runtime error: index out of range deserializing map %u", map);
    return PS_OK;
}

static uint32_t get_buffer(uint32_t type, uint32_t start, uint32_t max, char **out,
                           uint32_t *len) {
    *out = NULL;
    *len = 0;
    uint32_t st = proxy_get_buffer_bytes(type, start, max, out, len);
    if (st != PS_OK)
        return st;
    if (*out == NULL)
        return PS_NOT_FOUND;
    return PS_OK;
}

static uint32_t add_header(uint32_t map, const char *key, const char *value) {
    return proxy_add_header_map_value(map, key, (uint32_t)strlen(key), value,
                                      (uint32_t)strlen(value));
}

/* -- contexts (the SDK's state) ------------------------------------------------------------------ */

enum { K_FREE = 0, K_PLUGIN = 1, K_HTTP = 2 };

struct context {
    uint32_t id, root, kind;
    char scenario[32];
    uint32_t queue_token, ticks; /* plugin contexts */
    uint32_t postponed[16], n_postponed;
};

#define MAX_CONTEXTS 256
static struct context contexts[MAX_CONTEXTS];

struct callout {
    uint32_t plugin_id, token, caller_id;
};
#define MAX_CALLOUTS 64
static struct callout callouts[MAX_CALLOUTS];

static struct context *find(uint32_t id) {
    for (int i = 0; i < MAX_CONTEXTS; i++)
        if (contexts[i].kind != K_FREE && contexts[i].id == id)
            return &contexts[i];
    return NULL;
}

static struct context *plugin_of(uint32_t id, const char *callback) {
    struct context *c = find(id);
    if (c == NULL || c->kind != K_PLUGIN)
        go_panic("%s on invalid plugin context id %u (not a root context)", callback, id);
    return c;
}

static struct context *http_of(uint32_t id, const char *callback) {
    struct context *c = find(id);
    if (c == NULL || c->kind != K_HTTP)
        go_panic("invalid context on %s: %u", callback, id);
    return c;
}

/* -- main: the TinyGo program ------------------------------------------------------------------- */

int main(int argc, char **argv) {
    (void)argv;
    /* the Go runtime reads the clock and seeds its random source during start-up */
    uint64_t now = 0;
    uint32_t clock_status = tg_clock_time_get(1, 1, &now);
    unsigned char seed[8];
    uint32_t random_status = tg_random_get(seed, sizeof seed);
    if (touch_files)
        unused_file_system_calls();
    vm_context_set = 1; /* proxywasm.SetVMContext(&vmContext{}) */
    log_info("tinygo_like: main ran (argc=%d, clock %s, random %s): vm context set", argc,
             clock_status == 0 ? "ok" : "failed", random_status == 0 ? "ok" : "failed");
    return 0;
}

/* -- exports -------------------------------------------------------------------------------------- */

PROXY_EXPORT(proxy_abi_version_0_2_0) void proxy_abi_version_0_2_0(void) {}

PROXY_EXPORT(proxy_on_context_create)
void proxy_on_context_create(uint32_t context_id, uint32_t root_id) {
    need_vm_context("proxy_on_context_create");
    if (root_id != 0) {
        struct context *r = find(root_id);
        if (r == NULL || r->kind != K_PLUGIN)
            go_panic("invalid context id on proxy_on_context_create: %u (root %u)", context_id,
                     root_id);
    }
    for (int i = 0; i < MAX_CONTEXTS; i++) {
        if (contexts[i].kind == K_FREE) {
            memset(&contexts[i], 0, sizeof contexts[i]);
            contexts[i].id = context_id;
            contexts[i].root = root_id;
            contexts[i].kind = root_id == 0 ? K_PLUGIN : K_HTTP;
            strcpy(contexts[i].scenario, "default");
            return;
        }
    }
    go_panic("too many contexts");
}

PROXY_EXPORT(proxy_on_vm_start) uint32_t proxy_on_vm_start(uint32_t plugin_id, uint32_t size) {
    need_vm_context("proxy_on_vm_start");
    char *cfg;
    uint32_t len;
    uint32_t st = get_buffer(BUF_VM_CONFIGURATION, 0, size, &cfg, &len);
    if (st == PS_OK) {
        log_info("tinygo_like: vm_start plugin=%u vm_configuration='%.*s'", plugin_id, (int)len,
                 cfg);
        free(cfg);
    } else {
        log_info("tinygo_like: vm_start plugin=%u vm_configuration: %s", plugin_id, go_error(st));
    }
    return 1;
}

PROXY_EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t plugin_id, uint32_t size) {
    need_vm_context("proxy_on_configure");
    struct context *p = find(plugin_id);
    if (p == NULL || p->kind != K_PLUGIN)
        go_panic("invalid context on proxy_on_configure: %u", plugin_id);
    char *cfg;
    uint32_t len;
    uint32_t st = get_buffer(BUF_PLUGIN_CONFIGURATION, 0, size, &cfg, &len);
    if (st != PS_OK && st != PS_NOT_FOUND) {
        log_info("tinygo_like: error reading plugin configuration: %s", go_error(st));
        return 0;
    }
    if (st == PS_OK) {
        char sc[32];
        if (json_string_field(cfg, len, "scenario", sc, sizeof sc))
            strcpy(p->scenario, sc);
        free(cfg);
    }
    if (strcmp(p->scenario, "default") != 0 && strcmp(p->scenario, "http_call") != 0 &&
        strcmp(p->scenario, "tick") != 0 && strcmp(p->scenario, "postpone") != 0) {
        log_info("tinygo_like: unknown scenario '%s'", p->scenario);
        return 0;
    }
    log_info("tinygo_like: configure plugin=%u scenario=%s", plugin_id, p->scenario);
    st = proxy_register_shared_queue("tinygo_like.queue", 17, &p->queue_token);
    if (st != PS_OK)
        log_info("tinygo_like: register queue: %s", go_error(st));
    if (strcmp(p->scenario, "tick") == 0 || strcmp(p->scenario, "postpone") == 0) {
        st = proxy_set_tick_period_milliseconds(10);
        log_info("tinygo_like: tick period 10 ms: %s", go_error(st));
    }
    return 1;
}

PROXY_EXPORT(proxy_on_tick) void proxy_on_tick(uint32_t plugin_id) {
    need_vm_context("proxy_on_tick");
    struct context *p = plugin_of(plugin_id, "proxy_on_tick");
    p->ticks++;
    log_info("tinygo_like: tick %u on plugin context %u", p->ticks, plugin_id);
    for (uint32_t i = 0; i < p->n_postponed; i++) {
        uint32_t id = p->postponed[i];
        uint32_t st = proxy_set_effective_context(id);
        if (st == PS_OK)
            st = add_header(MAP_HTTP_REQUEST_HEADERS, "x-postponed", "resumed-on-tick");
        if (st == PS_OK)
            st = proxy_continue_stream(STREAM_HTTP_REQUEST);
        log_info("tinygo_like: resume postponed request %u on tick %u: %s", id, p->ticks,
                 go_error(st));
    }
    p->n_postponed = 0;
}

PROXY_EXPORT(proxy_on_queue_ready) void proxy_on_queue_ready(uint32_t plugin_id, uint32_t token) {
    need_vm_context("proxy_on_queue_ready");
    plugin_of(plugin_id, "proxy_on_queue_ready");
    for (;;) {
        char *v = NULL;
        uint32_t n = 0;
        uint32_t st = proxy_dequeue_shared_queue(token, &v, &n);
        if (st != PS_OK) {
            log_info("tinygo_like: dequeue on plugin context %u: %s", plugin_id, go_error(st));
            return;
        }
        log_info("tinygo_like: dequeued '%.*s' on plugin context %u", (int)n, v ? v : "",
                 plugin_id);
        free(v);
    }
}

static uint32_t dispatch_http_call(struct context *c) {
    char auth[256];
    uint32_t ast = get_header(MAP_HTTP_REQUEST_HEADERS, "authorization", auth, sizeof auth);
    const char *kv[8] = {":method", "GET", ":path", "/check", ":authority", "upstream",
                         "authorization", auth};
    uint32_t hlen = 0, tlen = 0;
    char *headers = pairs_encode(kv, ast == PS_OK ? 4 : 3, &hlen);
    char *trailers = pairs_encode(kv, 0, &tlen);
    uint32_t token = 0;
    uint32_t st = proxy_http_call("upstream", 8, headers, hlen, NULL, 0, trailers, tlen, 5000,
                                  &token);
    free(headers);
    free(trailers);
    if (st != PS_OK) {
        log_info("tinygo_like: dispatch http call failed: %s", go_error(st));
        return ACTION_CONTINUE;
    }
    for (int i = 0; i < MAX_CALLOUTS; i++) {
        if (callouts[i].token == 0) {
            callouts[i].plugin_id = c->root; /* registered on the caller's plugin context */
            callouts[i].token = token;
            callouts[i].caller_id = c->id;
            log_info("tinygo_like: http call dispatched to upstream, pausing");
            return ACTION_PAUSE;
        }
    }
    go_panic("too many callouts");
}

PROXY_EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t plugin_id, uint32_t callout_id, uint32_t nh,
                                 uint32_t nb, uint32_t nt) {
    need_vm_context("proxy_on_http_call_response");
    (void)nt;
    struct context *p = find(plugin_id);
    if (p == NULL || p->kind != K_PLUGIN)
        go_panic("http_call_response on invalid plugin context id %u (not a root context)",
                 plugin_id);
    struct callout *co = NULL;
    for (int i = 0; i < MAX_CALLOUTS; i++)
        if (callouts[i].token == callout_id && callouts[i].plugin_id == plugin_id && callout_id)
            co = &callouts[i];
    if (co == NULL)
        go_panic("invalid callout id: %u", callout_id);
    uint32_t caller = co->caller_id;
    co->token = 0;
    if (find(caller) == NULL)
        return; /* the caller's stream is gone: the SDK skips the callback */
    proxy_set_effective_context(caller); /* the SDK ignores this status */
    log_info("tinygo_like: http call response delivered to plugin context %u (a root)", plugin_id);
    char status[32] = "failed", body[256] = "";
    if (nh > 0) {
        get_header(MAP_HTTP_CALL_RESPONSE_HEADERS, ":status", status, sizeof status);
        char *b;
        uint32_t bl;
        if (get_buffer(BUF_HTTP_CALL_RESPONSE_BODY, 0, nb, &b, &bl) == PS_OK) {
            while (bl > 0 && (b[bl - 1] == '\n' || b[bl - 1] == '\r'))
                bl--;
            copy_str(body, sizeof body, b, bl);
            free(b);
        }
    }
    log_info("tinygo_like: http call response status=%s body='%s'", status, body);
    char root_id[16];
    snprintf(root_id, sizeof root_id, "%u", plugin_id);
    uint32_t st = add_header(MAP_HTTP_REQUEST_HEADERS, "x-call-status", status);
    if (st == PS_OK)
        st = add_header(MAP_HTTP_REQUEST_HEADERS, "x-call-root", root_id);
    if (st != PS_OK)
        log_info("tinygo_like: add header after the call: %s", go_error(st));
    st = proxy_continue_stream(STREAM_HTTP_REQUEST);
    log_info("tinygo_like: resume request: %s", go_error(st));
}

PROXY_EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t context_id, uint32_t nh, uint32_t eos) {
    need_vm_context("proxy_on_request_headers");
    struct context *c = http_of(context_id, "proxy_on_request_headers");
    struct context *root = find(c->root);
    (void)eos;

    struct pairs hp;
    char *raw;
    uint32_t st = get_map(MAP_HTTP_REQUEST_HEADERS, &hp, &raw);
    log_info("tinygo_like: request headers: %u pairs (callback said %u), err=%s", hp.n, nh,
             go_error(st));
    free(raw);
    char path[256], v[256];
    st = get_header(MAP_HTTP_REQUEST_HEADERS, ":path", path, sizeof path);
    log_info("tinygo_like: :path=%s err=%s", path, go_error(st));
    st = get_header(MAP_HTTP_REQUEST_HEADERS, "x-missing", v, sizeof v);
    log_info("tinygo_like: x-missing: err=%s", go_error(st));

    const char *env = getenv("TINYGO_ENV");
    log_info("tinygo_like: env TINYGO_ENV=%s", env ? env : "<unset>");
    uint64_t now = 0;
    st = tg_clock_time_get(0, 1, &now);
    log_info("tinygo_like: time.Now via clock_time_get: %s", st == 0 && now > 0 ? "ok" : "failed");
    unsigned char rnd[16];
    st = tg_random_get(rnd, sizeof rnd);
    log_info("tinygo_like: random_get: %s", st == 0 ? "ok" : "failed");
    printf("tinygo_like stdout: request %s\n", path);
    fflush(stdout);

    if (root != NULL && strcmp(root->scenario, "http_call") == 0)
        return dispatch_http_call(c);
    if (root != NULL && strcmp(root->scenario, "postpone") == 0 && root->n_postponed < 16) {
        root->postponed[root->n_postponed++] = c->id;
        log_info("tinygo_like: postponed request %u until the next tick", c->id);
        return ACTION_PAUSE;
    }
    if (root != NULL && strcmp(root->scenario, "tick") == 0) {
        char t[16];
        snprintf(t, sizeof t, "%u", root->ticks);
        add_header(MAP_HTTP_REQUEST_HEADERS, "x-ticks", t);
    }
    if (root != NULL) {
        st = proxy_enqueue_shared_queue(root->queue_token, path, (uint32_t)strlen(path));
        log_info("tinygo_like: enqueue '%s': %s", path, go_error(st));
    }

    /* which allocator the host used for everything returned so far */
    char counts[16];
    const char *used = alloc_spec_count && alloc_malloc_count ? "spec+malloc"
                       : alloc_spec_count                    ? "spec"
                       : alloc_malloc_count                  ? "malloc"
                                                             : "none";
    add_header(MAP_HTTP_REQUEST_HEADERS, "x-alloc", used);
    add_header(MAP_HTTP_REQUEST_HEADERS, "x-alloc-first", first_allocator);
    snprintf(counts, sizeof counts, "%u", alloc_spec_count);
    add_header(MAP_HTTP_REQUEST_HEADERS, "x-alloc-spec-count", counts);
    snprintf(counts, sizeof counts, "%u", alloc_malloc_count);
    add_header(MAP_HTTP_REQUEST_HEADERS, "x-alloc-malloc-count", counts);
    st = add_header(MAP_HTTP_REQUEST_HEADERS, "x-tinygo", "1");
    log_info("tinygo_like: allocator used: %s (first: %s), add header err=%s", used,
             first_allocator, go_error(st));
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_request_body)
uint32_t proxy_on_request_body(uint32_t context_id, uint32_t size, uint32_t eos) {
    need_vm_context("proxy_on_request_body");
    http_of(context_id, "proxy_on_request_body");
    if (!eos)
        return ACTION_PAUSE; /* wait for the whole body */
    char *b;
    uint32_t bl;
    uint32_t st = get_buffer(BUF_HTTP_REQUEST_BODY, 0, size, &b, &bl); /* GetHttpRequestBody */
    char orig[256];
    copy_str(orig, sizeof orig, b, st == PS_OK ? bl : 0);
    free(b);
    static const char rep[] = "go-replaced", pre[] = "<", app[] = ">";
    uint32_t r1 = proxy_set_buffer_bytes(BUF_HTTP_REQUEST_BODY, 0, 0x7FFFFFFF, rep, sizeof rep - 1);
    uint32_t r2 = proxy_set_buffer_bytes(BUF_HTTP_REQUEST_BODY, 0x7FFFFFFF, 0, app, sizeof app - 1);
    uint32_t r3 = proxy_set_buffer_bytes(BUF_HTTP_REQUEST_BODY, 0, 0, pre, sizeof pre - 1);
    log_info("tinygo_like: request body '%s' (%u bytes): replace %s, append %s, prepend %s", orig,
             size, go_error(r1), go_error(r2), go_error(r3));
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t context_id, uint32_t nh, uint32_t eos) {
    need_vm_context("proxy_on_response_headers");
    http_of(context_id, "proxy_on_response_headers");
    (void)nh;
    (void)eos;
    uint32_t st = add_header(MAP_HTTP_RESPONSE_HEADERS, "x-tinygo-response", "1");
    if (st != PS_OK)
        log_info("tinygo_like: add response header: %s", go_error(st));
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_done) uint32_t proxy_on_done(uint32_t context_id) {
    need_vm_context("proxy_on_done");
    (void)context_id;
    return 1;
}

PROXY_EXPORT(proxy_on_log) void proxy_on_log(uint32_t context_id) {
    need_vm_context("proxy_on_log");
    (void)context_id;
}

PROXY_EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t context_id) {
    need_vm_context("proxy_on_delete");
    struct context *c = find(context_id);
    if (c != NULL)
        c->kind = K_FREE;
}
