/*
 * rust_strict.c -- behaves at the ABI level like a plugin built with the Rust Proxy-Wasm SDK
 * (proxy-wasm crate 0.2.x) for wasm32-wasip1. See README.md in this directory.
 *
 * What it copies from the Rust SDK (ABI doc sections 1.3, 1.4, 2.3, 3, 6.9):
 *  - exports proxy_abi_version_0_2_1, is a WASI reactor (_initialize; the SDK's main! macro
 *    registers the root context factory there -- here a constructor sets `initialized`);
 *  - allocator export proxy_on_memory_allocate only (no malloc export);
 *  - every host call goes through HC(accepted, fn, args...): a status outside the set the
 *    SDK's hostcalls.rs accepts for that function "panics" (the panic hook logs the message
 *    at critical level, then the module traps with `unreachable`);
 *  - the dispatcher panics on unknown context ids, duplicate context ids, unknown callout
 *    tokens, and unwraps proxy_set_effective_context before on_http_call_response;
 *  - whole buffers are read with max_size = 0xFFFFFFFF (usize::MAX), as the SDK does.
 *
 * Scenarios (plugin configuration JSON {"scenario": "..."}): "default", "http_call",
 * "http_auth", "tick".
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plugin_util.h"
#include "proxy_abi.h"

/* -- the Rust SDK's status discipline ------------------------------------------------------- */

#define S(x) (1u << (x))
#define ACC_OK S(PS_OK)
#define ACC_OK_NF (S(PS_OK) | S(PS_NOT_FOUND))
#define ACC_PROPERTY (ACC_OK_NF | S(PS_SERIALIZATION_FAILURE) | S(PS_INTERNAL_FAILURE))
#define ACC_SET_SHARED (S(PS_OK) | S(PS_CAS_MISMATCH))
#define ACC_DEQUEUE (ACC_OK_NF | S(PS_EMPTY))
#define ACC_HTTP_CALL (S(PS_OK) | S(PS_BAD_ARGUMENT) | S(PS_INTERNAL_FAILURE))
#define ACC_EFFECTIVE (S(PS_OK) | S(PS_BAD_ARGUMENT))
#define ACC_FOREIGN (ACC_OK_NF | S(PS_BAD_ARGUMENT) | S(PS_SERIALIZATION_FAILURE) | S(PS_INTERNAL_FAILURE))
#define ACC_METRIC (ACC_OK_NF | S(PS_BAD_ARGUMENT))
#define ACC_RECORD ACC_OK_NF

#define MAX_SIZE 0xFFFFFFFFu /* usize::MAX on wasm32 */

static int initialized; /* set by _initialize (constructors), like main! registering the root */

__attribute__((noreturn)) static void rust_panic(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    /* The SDK's panic hook: log at critical (its own status is not checked here). */
    proxy_log(LL_CRITICAL, msg, (uint32_t)n);
    __builtin_trap();
}

static uint32_t rust_check(const char *fn, uint32_t status, uint32_t accepted) {
    if (status >= 32 || !(accepted & (1u << status)))
        rust_panic("rust_strict panicked at 'unexpected status: %u' (%s) calling %s", status,
                   status_name(status), fn);
    return status;
}

#define HC(accepted, fn, ...) rust_check(#fn, fn(__VA_ARGS__), (accepted))

static void vlog(uint32_t level, const char *fmt, va_list ap) {
    char msg[1024];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof msg)
        n = sizeof msg - 1;
    HC(ACC_OK, proxy_log, level, msg, (uint32_t)n);
}

__attribute__((format(printf, 1, 2))) static void info(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(LL_INFO, fmt, ap);
    va_end(ap);
}

__attribute__((format(printf, 1, 2))) static void debug(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(LL_DEBUG, fmt, ap);
    va_end(ap);
}

/* -- hostcalls.rs-like wrappers ------------------------------------------------------------- */

/* get_buffer: Ok(Some)/Ok(None); caller frees *out. */
static int get_buffer(uint32_t type, uint32_t start, uint32_t max, char **out, uint32_t *len) {
    *out = NULL;
    *len = 0;
    uint32_t st = HC(ACC_OK_NF, proxy_get_buffer_bytes, type, start, max, out, len);
    if (st == PS_NOT_FOUND || *out == NULL) {
        *out = NULL;
        *len = 0;
        return 0;
    }
    return 1;
}

static int get_map_value(uint32_t map, const char *key, char *out, uint32_t out_size) {
    char *p = NULL;
    uint32_t n = 0;
    uint32_t st =
        HC(ACC_OK_NF, proxy_get_header_map_value, map, key, (uint32_t)strlen(key), &p, &n);
    if (st == PS_NOT_FOUND) {
        out[0] = 0;
        return 0;
    }
    copy_str(out, out_size, p, n); /* OK with a null pointer is Some("") since SDK 0.2.3 */
    free(p);
    return 1;
}

/* get_map: OK only; the returned buffer must be freed; a malformed map panics (the SDK
 * indexes out of bounds while deserializing). */
static char *get_map(uint32_t map, struct pairs *out) {
    char *p = NULL;
    uint32_t n = 0;
    HC(ACC_OK, proxy_get_header_map_pairs, map, &p, &n);
    if (!pairs_decode(p, n, out))
        rust_panic("rust_strict panicked at 'index out of bounds' deserializing map %u (%u bytes)",
                   map, n);
    return p;
}

static void add_map_value(uint32_t map, const char *key, const char *value) {
    HC(ACC_OK, proxy_add_header_map_value, map, key, (uint32_t)strlen(key), value,
       (uint32_t)strlen(value));
}

static void replace_map_value(uint32_t map, const char *key, const char *value) {
    HC(ACC_OK, proxy_replace_header_map_value, map, key, (uint32_t)strlen(key), value,
       (uint32_t)strlen(value));
}

static void remove_map_value(uint32_t map, const char *key) {
    HC(ACC_OK, proxy_remove_header_map_value, map, key, (uint32_t)strlen(key));
}

/* Context::get_property: hostcalls::get_property(path).unwrap() -- NOT_FOUND is None,
 * SERIALIZATION_FAILURE / INTERNAL_FAILURE come back as Err and the unwrap panics. */
static int get_property_raw(const char *path, uint32_t path_len, const char *label, char *out,
                            uint32_t out_size) {
    char *p = NULL;
    uint32_t len = 0;
    uint32_t st = HC(ACC_PROPERTY, proxy_get_property, path, path_len, &p, &len);
    if (st == PS_SERIALIZATION_FAILURE || st == PS_INTERNAL_FAILURE)
        rust_panic("rust_strict panicked at 'called `Result::unwrap()` on an `Err` value: %s' "
                   "(get_property %s)", status_name(st), label);
    if (st == PS_NOT_FOUND) {
        out[0] = 0;
        return 0;
    }
    copy_str(out, out_size, p, len);
    free(p);
    return 1;
}

/* `dotted` uses '.' between segments; it is sent NUL-separated, as the SDK joins
 * vec!["request", "path"]. */
static int get_property(const char *dotted, char *out, uint32_t out_size) {
    char path[256];
    uint32_t n = (uint32_t)strlen(dotted);
    copy_str(path, sizeof path, dotted, n);
    for (uint32_t i = 0; i < n; i++)
        if (path[i] == '.')
            path[i] = 0;
    return get_property_raw(path, n, dotted, out, out_size);
}

/* -- contexts (the SDK dispatcher's bookkeeping) --------------------------------------------- */

enum { K_FREE = 0, K_ROOT = 1, K_HTTP = 2 };

struct context {
    uint32_t id;
    uint32_t root;
    int kind;
    /* root state */
    char scenario[32];
    uint32_t m_requests, m_inflight, m_path_len, m_ticks, queue_token;
    /* stream state */
    char path[256];
};

#define MAX_CONTEXTS 256
static struct context contexts[MAX_CONTEXTS];

struct callout {
    uint32_t token, context_id;
};
#define MAX_CALLOUTS 64
static struct callout callouts[MAX_CALLOUTS];

static void need_init(const char *callback) {
    if (!initialized)
        rust_panic("rust_strict panicked: %s called before _initialize (no root context factory)",
                   callback);
}

static struct context *find(uint32_t id) {
    for (int i = 0; i < MAX_CONTEXTS; i++)
        if (contexts[i].kind != K_FREE && contexts[i].id == id)
            return &contexts[i];
    return NULL;
}

static struct context *root_of(uint32_t id, const char *callback) {
    struct context *c = find(id);
    if (c == NULL || c->kind != K_ROOT)
        rust_panic("rust_strict panicked at 'invalid context_id' (%s for %u)", callback, id);
    return c;
}

static struct context *http_of(uint32_t id, const char *callback) {
    struct context *c = find(id);
    if (c == NULL || c->kind != K_HTTP)
        rust_panic("rust_strict panicked at 'invalid context_id' (%s for %u)", callback, id);
    return c;
}

static struct context *root_for_stream(struct context *c) {
    struct context *r = find(c->root);
    if (r == NULL || r->kind != K_ROOT)
        rust_panic("rust_strict panicked at 'invalid root_context_id' (stream %u, root %u)",
                   c->id, c->root);
    return r;
}

/* -- exports: integration and memory ---------------------------------------------------------- */

__attribute__((constructor)) static void sdk_main(void) { initialized = 1; }

PROXY_EXPORT(proxy_abi_version_0_2_1) void proxy_abi_version_0_2_1(void) {}

PROXY_EXPORT(proxy_on_memory_allocate) void *proxy_on_memory_allocate(uint32_t size) {
    return malloc(size);
}

PROXY_EXPORT(proxy_on_context_create)
void proxy_on_context_create(uint32_t context_id, uint32_t parent_id) {
    need_init("proxy_on_context_create");
    if (find(context_id) != NULL)
        rust_panic("rust_strict panicked at 'duplicate context_id' (%u)", context_id);
    if (parent_id != 0)
        root_of(parent_id, "proxy_on_context_create (parent)");
    for (int i = 0; i < MAX_CONTEXTS; i++) {
        if (contexts[i].kind == K_FREE) {
            memset(&contexts[i], 0, sizeof contexts[i]);
            contexts[i].id = context_id;
            contexts[i].root = parent_id;
            contexts[i].kind = parent_id == 0 ? K_ROOT : K_HTTP;
            strcpy(contexts[i].scenario, "default");
            if (parent_id == 0)
                debug("rust_strict: root context %u created", context_id);
            else
                debug("rust_strict: http context %u created under root %u", context_id, parent_id);
            return;
        }
    }
    rust_panic("rust_strict panicked: too many contexts");
}

PROXY_EXPORT(proxy_on_vm_start) uint32_t proxy_on_vm_start(uint32_t root_id, uint32_t size) {
    need_init("proxy_on_vm_start");
    root_of(root_id, "proxy_on_vm_start");
    char *cfg;
    uint32_t len;
    if (get_buffer(BUF_VM_CONFIGURATION, 0, MAX_SIZE, &cfg, &len)) {
        info("rust_strict: vm_start root=%u vm_configuration='%.*s' (size %u)", root_id, (int)len,
             cfg, size);
        free(cfg);
    } else {
        info("rust_strict: vm_start root=%u vm_configuration=none (size %u)", root_id, size);
    }
    return 1;
}

static uint32_t define_metric(uint32_t type, const char *name) {
    uint32_t id = 0;
    HC(ACC_OK, proxy_define_metric, type, name, (uint32_t)strlen(name), &id);
    return id;
}

static uint64_t metric_value(uint32_t id, uint32_t *status) {
    uint64_t v = 0;
    *status = HC(ACC_METRIC, proxy_get_metric, id, &v);
    return v;
}

PROXY_EXPORT(proxy_on_configure) uint32_t proxy_on_configure(uint32_t root_id, uint32_t size) {
    need_init("proxy_on_configure");
    struct context *root = root_of(root_id, "proxy_on_configure");
    char *cfg;
    uint32_t len;
    int have = get_buffer(BUF_PLUGIN_CONFIGURATION, 0, MAX_SIZE, &cfg, &len);
    if (have) {
        char sc[32];
        if (json_string_field(cfg, len, "scenario", sc, sizeof sc))
            strcpy(root->scenario, sc);
        free(cfg);
    }
    if (strcmp(root->scenario, "default") != 0 && strcmp(root->scenario, "http_call") != 0 &&
        strcmp(root->scenario, "http_auth") != 0 && strcmp(root->scenario, "tick") != 0) {
        info("rust_strict: configure root=%u rejected unknown scenario '%s'", root_id,
             root->scenario);
        return 0;
    }
    info("rust_strict: configure root=%u read %u of %u bytes, scenario=%s", root_id,
         have ? len : 0u, size, root->scenario);
    char rid[128];
    if (get_property("plugin_root_id", rid, sizeof rid))
        info("rust_strict: configure property plugin_root_id=%s", rid);
    else
        info("rust_strict: configure property plugin_root_id: NOT_FOUND");
    root->m_requests = define_metric(METRIC_COUNTER, "rust_strict.requests_total");
    root->m_inflight = define_metric(METRIC_GAUGE, "rust_strict.inflight");
    root->m_path_len = define_metric(METRIC_HISTOGRAM, "rust_strict.path_len");
    if (strcmp(root->scenario, "tick") == 0) {
        root->m_ticks = define_metric(METRIC_COUNTER, "rust_strict.ticks");
        HC(ACC_OK, proxy_set_tick_period_milliseconds, 10);
        info("rust_strict: tick period set to 10 ms");
    }
    return 1;
}

PROXY_EXPORT(proxy_on_tick) void proxy_on_tick(uint32_t root_id) {
    need_init("proxy_on_tick");
    struct context *root = root_of(root_id, "proxy_on_tick");
    HC(ACC_METRIC, proxy_increment_metric, root->m_ticks, 1);
    uint32_t st;
    uint64_t n = metric_value(root->m_ticks, &st);
    info("rust_strict: tick %llu", (unsigned long long)n);
}

PROXY_EXPORT(proxy_on_queue_ready) void proxy_on_queue_ready(uint32_t root_id, uint32_t token) {
    need_init("proxy_on_queue_ready");
    root_of(root_id, "proxy_on_queue_ready");
    for (;;) {
        char *p = NULL;
        uint32_t n = 0;
        uint32_t st = HC(ACC_DEQUEUE, proxy_dequeue_shared_queue, token, &p, &n);
        if (st == PS_EMPTY) {
            info("rust_strict: queue empty");
            return;
        }
        if (st == PS_NOT_FOUND) {
            info("rust_strict: queue %u: NOT_FOUND", token);
            return;
        }
        info("rust_strict: dequeued '%.*s'", (int)n, p ? p : "");
        free(p);
    }
}

/* -- HTTP: the default scenario -------------------------------------------------------------- */

static void shared_counter(void) {
    static const char key[] = "rust_strict.requests";
    for (int attempt = 0; attempt < 5; attempt++) {
        char *p = NULL;
        uint32_t n = 0, cas = 0;
        uint32_t st = HC(ACC_OK_NF, proxy_get_shared_data, key, sizeof key - 1, &p, &n, &cas);
        unsigned long cur = 0;
        if (st == PS_OK && p != NULL) {
            char tmp[32];
            copy_str(tmp, sizeof tmp, p, n);
            cur = strtoul(tmp, NULL, 10);
        }
        free(p);
        char val[32];
        int vl = snprintf(val, sizeof val, "%lu", cur + 1);
        st = HC(ACC_SET_SHARED, proxy_set_shared_data, key, sizeof key - 1, val, (uint32_t)vl,
                st == PS_OK ? cas : 0);
        if (st == PS_OK) {
            /* read back what we wrote */
            p = NULL;
            n = 0;
            uint32_t cas2 = 0;
            HC(ACC_OK_NF, proxy_get_shared_data, key, sizeof key - 1, &p, &n, &cas2);
            info("rust_strict: shared %s=%.*s (cas changed: %s)", key, (int)n, p ? p : "",
                 cas2 != cas ? "yes" : "no");
            free(p);
            return;
        }
        info("rust_strict: shared %s: CAS_MISMATCH, retrying", key);
    }
    info("rust_strict: shared counter gave up after 5 CAS mismatches");
}

static void metrics(struct context *root, const char *path) {
    uint32_t st;
    HC(ACC_METRIC, proxy_increment_metric, root->m_requests, 1);
    uint64_t v = metric_value(root->m_requests, &st);
    info("rust_strict: counter rust_strict.requests_total=%llu", (unsigned long long)v);
    HC(ACC_RECORD, proxy_record_metric, root->m_inflight, 42);
    HC(ACC_METRIC, proxy_increment_metric, root->m_inflight, -2);
    v = metric_value(root->m_inflight, &st);
    info("rust_strict: gauge rust_strict.inflight=%lld", (long long)v);
    HC(ACC_RECORD, proxy_record_metric, root->m_path_len, (uint64_t)strlen(path));
    metric_value(root->m_path_len, &st);
    info("rust_strict: histogram rust_strict.path_len recorded %u, get_metric: %s",
         (unsigned)strlen(path), status_name(st));
}

static void queue(const char *path) {
    static const char name[] = "rust_strict.queue";
    uint32_t token = 0, resolved = 0;
    HC(ACC_OK, proxy_register_shared_queue, name, sizeof name - 1, &token);
    uint32_t st = HC(ACC_OK_NF, proxy_resolve_shared_queue, "", 0, name, sizeof name - 1,
                     &resolved);
    info("rust_strict: queue registered, resolve: %s, same token: %s", status_name(st),
         token == resolved && token != 0 ? "yes" : "no");
    uint32_t missing = 0;
    st = HC(ACC_OK_NF, proxy_resolve_shared_queue, "", 0, "rust_strict.no_such_queue", 25,
            &missing);
    info("rust_strict: resolve rust_strict.no_such_queue: %s", status_name(st));
    st = HC(ACC_OK_NF, proxy_enqueue_shared_queue, token, path, (uint32_t)strlen(path));
    info("rust_strict: enqueued '%s': %s", path, status_name(st));
}

static void foreign(void) {
    static const char args[] = "hello hello hello hello";
    char *p = NULL;
    uint32_t n = 0;
    uint32_t st = HC(ACC_FOREIGN, proxy_call_foreign_function, "compress", 8, args,
                     sizeof args - 1, &p, &n);
    info("rust_strict: foreign compress: %s, %u bytes", status_name(st), st == PS_OK ? n : 0u);
    free(p);
    p = NULL;
    n = 0;
    st = HC(ACC_FOREIGN, proxy_call_foreign_function, "no_such_function", 16, args, 5, &p, &n);
    info("rust_strict: foreign no_such_function: %s", status_name(st));
    free(p);
}

static void default_request_headers(struct context *c, struct context *root, uint32_t nh) {
    /* all pairs */
    struct pairs hp;
    char *raw = get_map(MAP_HTTP_REQUEST_HEADERS, &hp);
    info("rust_strict: request headers: %u pairs (callback said %u)", hp.n, nh);
    free(raw);

    /* one value, and a missing one */
    get_map_value(MAP_HTTP_REQUEST_HEADERS, ":path", c->path, sizeof c->path);
    info("rust_strict: :path=%s", c->path);
    char v[256];
    if (get_map_value(MAP_HTTP_REQUEST_HEADERS, "x-missing", v, sizeof v))
        info("rust_strict: x-missing: found '%s'", v);
    else
        info("rust_strict: x-missing: NOT_FOUND");

    /* mutations */
    add_map_value(MAP_HTTP_REQUEST_HEADERS, "x-rust-added", "1");
    replace_map_value(MAP_HTTP_REQUEST_HEADERS, "x-rust-replaced", "new");
    remove_map_value(MAP_HTTP_REQUEST_HEADERS, "x-rust-remove");
    info("rust_strict: headers mutated (added x-rust-added, replaced x-rust-replaced, "
         "removed x-rust-remove)");

    /* properties */
    static const char *const props[] = {"request.path", "request.method", "request.protocol",
                                        "source.address", "plugin_root_id",
                                        "no.such.property"};
    for (unsigned i = 0; i < sizeof props / sizeof props[0]; i++) {
        if (get_property(props[i], v, sizeof v))
            info("rust_strict: property %s=%s", props[i], v);
        else
            info("rust_strict: property %s: NOT_FOUND", props[i]);
    }

    /* log level, time */
    uint32_t level = 99;
    HC(ACC_OK, proxy_get_log_level, &level);
    if (level > LL_CRITICAL) /* the SDK reads it into an enum without such a value */
        rust_panic("rust_strict panicked: invalid log level %u", level);
    info("rust_strict: log level=%u", level);
    uint64_t now = 0;
    HC(ACC_OK, proxy_get_current_time_nanoseconds, &now);
    info("rust_strict: current time nonzero: %s", now > 0 ? "yes" : "no");

    shared_counter();
    metrics(root, c->path);
    queue(c->path);

    /* stdout through WASI fd_write (println!), and the WASI environment */
    printf("rust_strict stdout: request %s\n", c->path);
    fflush(stdout);
    const char *env = getenv("RUST_STRICT_ENV");
    info("rust_strict: env RUST_STRICT_ENV=%s", env ? env : "<unset>");

    foreign();

    /* filter state round trip: one path segment that happens to contain a dot */
    static const char note[] = "hello-from-rust";
    HC(ACC_OK, proxy_set_property, "rust_strict.note", 16, note, sizeof note - 1);
    if (get_property_raw("rust_strict.note", 16, "rust_strict.note", v, sizeof v))
        info("rust_strict: property rust_strict.note=%s", v);
    else
        info("rust_strict: property rust_strict.note: NOT_FOUND");
}

/* -- HTTP: the http_call scenario ----------------------------------------------------------- */

static uint32_t start_http_call(struct context *c) {
    char auth[256];
    int have_auth = get_map_value(MAP_HTTP_REQUEST_HEADERS, "authorization", auth, sizeof auth);
    const char *kv[8] = {":method", "GET", ":path", "/check", ":authority", "upstream",
                         "authorization", auth};
    uint32_t hlen = 0, tlen = 0;
    char *headers = pairs_encode(kv, have_auth ? 4 : 3, &hlen);
    char *trailers = pairs_encode(kv, 0, &tlen); /* the SDK serializes vec![] as count 0 */
    uint32_t token = 0;
    uint32_t st = HC(ACC_HTTP_CALL, proxy_http_call, "upstream", 8, headers, hlen, "", 0,
                     trailers, tlen, 5000, &token);
    free(headers);
    free(trailers);
    if (st != PS_OK) {
        info("rust_strict: http_call to upstream failed: %s", status_name(st));
        return ACTION_CONTINUE;
    }
    for (int i = 0; i < MAX_CALLOUTS; i++) {
        if (callouts[i].token == token)
            rust_panic("rust_strict panicked: duplicate callout token %u", token);
    }
    for (int i = 0; i < MAX_CALLOUTS; i++) {
        if (callouts[i].token == 0) {
            callouts[i].token = token;
            callouts[i].context_id = c->id;
            info("rust_strict: http_call to upstream dispatched, pausing");
            return ACTION_PAUSE;
        }
    }
    rust_panic("rust_strict panicked: too many callouts");
}

PROXY_EXPORT(proxy_on_http_call_response)
void proxy_on_http_call_response(uint32_t context_id, uint32_t token, uint32_t nh, uint32_t nb,
                                 uint32_t nt) {
    need_init("proxy_on_http_call_response");
    (void)context_id; /* the Rust dispatcher routes by token only */
    uint32_t owner = 0;
    for (int i = 0; i < MAX_CALLOUTS; i++) {
        if (callouts[i].token == token && token != 0) {
            owner = callouts[i].context_id;
            callouts[i].token = 0;
            break;
        }
    }
    if (owner == 0)
        rust_panic("rust_strict panicked at 'invalid token_id' (%u)", token);
    struct context *c = find(owner);
    if (c == NULL) {
        info("rust_strict: http_call response for a finished stream dropped");
        return;
    }
    /* dispatcher: hostcalls::set_effective_context(context_id).unwrap() */
    uint32_t st = HC(ACC_EFFECTIVE, proxy_set_effective_context, owner);
    if (st != PS_OK)
        rust_panic("rust_strict panicked at 'called `Result::unwrap()` on an `Err` value: %s' "
                   "(set_effective_context %u)", status_name(st), owner);
    char status[32] = "";
    char body[256] = "";
    if (nh == 0) {
        uint32_t code = 0;
        char *msg = NULL;
        uint32_t ml = 0;
        HC(ACC_OK, proxy_get_status, &code, &msg, &ml);
        info("rust_strict: http_call failed: status %u '%.*s'", code, (int)ml, msg ? msg : "");
        free(msg);
        strcpy(status, "failed");
    } else {
        struct pairs rp, rt;
        char *raw = get_map(MAP_HTTP_CALL_RESPONSE_HEADERS, &rp);
        char *rawt = get_map(MAP_HTTP_CALL_RESPONSE_TRAILERS, &rt);
        debug("rust_strict: http_call response: %u headers (callback said %u), %u trailers "
              "(callback said %u)", rp.n, nh, rt.n, nt);
        free(raw);
        free(rawt);
        get_map_value(MAP_HTTP_CALL_RESPONSE_HEADERS, ":status", status, sizeof status);
        char *b;
        uint32_t bl;
        if (get_buffer(BUF_HTTP_CALL_RESPONSE_BODY, 0, nb, &b, &bl)) {
            while (bl > 0 && (b[bl - 1] == '\n' || b[bl - 1] == '\r'))
                bl--;
            copy_str(body, sizeof body, b, bl);
            free(b);
        }
        info("rust_strict: http_call response status=%s body='%s'", status, body);
        if (strcmp(root_for_stream(c)->scenario, "http_auth") == 0 && strcmp(status, "200") != 0) {
            /* http_auth_random: send_http_response(403, headers, Some(body)) */
            static const char deny[] = "Access forbidden.\n";
            const char *kv[2] = {"powered-by", "rust_strict"};
            uint32_t hl = 0;
            char *hdrs = pairs_encode(kv, 1, &hl);
            HC(ACC_OK, proxy_send_local_response, 403, "", 0, deny, sizeof deny - 1, hdrs, hl,
               -1);
            free(hdrs);
            info("rust_strict: access denied (call status %s), sent local 403", status);
            return;
        }
        add_map_value(MAP_HTTP_REQUEST_HEADERS, "x-call-body", body);
    }
    add_map_value(MAP_HTTP_REQUEST_HEADERS, "x-call-status", status);
    HC(ACC_OK, proxy_continue_stream, STREAM_HTTP_REQUEST);
    info("rust_strict: request resumed");
}

/* -- HTTP callbacks ----------------------------------------------------------------------------- */

PROXY_EXPORT(proxy_on_request_headers)
uint32_t proxy_on_request_headers(uint32_t context_id, uint32_t nh, uint32_t eos) {
    need_init("proxy_on_request_headers");
    struct context *c = http_of(context_id, "proxy_on_request_headers");
    struct context *root = root_for_stream(c);
    (void)eos;
    if (strcmp(root->scenario, "http_call") == 0 || strcmp(root->scenario, "http_auth") == 0) {
        get_map_value(MAP_HTTP_REQUEST_HEADERS, ":path", c->path, sizeof c->path);
        return start_http_call(c);
    }
    if (strcmp(root->scenario, "tick") == 0) {
        uint32_t st;
        uint64_t n = metric_value(root->m_ticks, &st);
        char v[32];
        snprintf(v, sizeof v, "%llu", (unsigned long long)n);
        add_map_value(MAP_HTTP_REQUEST_HEADERS, "x-ticks", v);
        info("rust_strict: request after %s ticks", v);
        return ACTION_CONTINUE;
    }
    default_request_headers(c, root, nh);
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_request_body)
uint32_t proxy_on_request_body(uint32_t context_id, uint32_t size, uint32_t eos) {
    need_init("proxy_on_request_body");
    http_of(context_id, "proxy_on_request_body");
    if (!eos) {
        info("rust_strict: request body chunk, %u bytes so far, pausing to buffer", size);
        return ACTION_PAUSE;
    }
    char *b;
    uint32_t bl;
    get_buffer(BUF_HTTP_REQUEST_BODY, 0, MAX_SIZE, &b, &bl);
    char out[512];
    int n = snprintf(out, sizeof out, "rust_strict replaced %u bytes: %.*s", bl, (int)bl,
                     b ? b : "");
    if (n < 0)
        n = 0;
    if ((size_t)n >= sizeof out)
        n = sizeof out - 1;
    HC(ACC_OK, proxy_set_buffer_bytes, BUF_HTTP_REQUEST_BODY, 0, size, out, (uint32_t)n);
    info("rust_strict: request body %u bytes (callback said %u) replaced with %d bytes", bl, size,
         n);
    free(b);
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_request_trailers)
uint32_t proxy_on_request_trailers(uint32_t context_id, uint32_t n) {
    need_init("proxy_on_request_trailers");
    http_of(context_id, "proxy_on_request_trailers");
    (void)n;
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_response_headers)
uint32_t proxy_on_response_headers(uint32_t context_id, uint32_t nh, uint32_t eos) {
    need_init("proxy_on_response_headers");
    http_of(context_id, "proxy_on_response_headers");
    (void)nh;
    (void)eos;
    char status[32];
    if (get_map_value(MAP_HTTP_RESPONSE_HEADERS, ":status", status, sizeof status))
        info("rust_strict: response :status=%s", status);
    else
        info("rust_strict: response :status NOT_FOUND");
    add_map_value(MAP_HTTP_RESPONSE_HEADERS, "x-rust-response", "1");
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_response_body)
uint32_t proxy_on_response_body(uint32_t context_id, uint32_t size, uint32_t eos) {
    need_init("proxy_on_response_body");
    http_of(context_id, "proxy_on_response_body");
    (void)size;
    (void)eos;
    return ACTION_CONTINUE;
}

PROXY_EXPORT(proxy_on_response_trailers)
uint32_t proxy_on_response_trailers(uint32_t context_id, uint32_t n) {
    need_init("proxy_on_response_trailers");
    http_of(context_id, "proxy_on_response_trailers");
    (void)n;
    return ACTION_CONTINUE;
}

/* -- lifecycle ------------------------------------------------------------------------------------ */

PROXY_EXPORT(proxy_on_done) uint32_t proxy_on_done(uint32_t context_id) {
    need_init("proxy_on_done");
    struct context *c = find(context_id);
    if (c == NULL)
        rust_panic("rust_strict panicked at 'invalid context_id' (proxy_on_done for %u)",
                   context_id);
    return 1;
}

PROXY_EXPORT(proxy_on_log) void proxy_on_log(uint32_t context_id) {
    need_init("proxy_on_log");
    struct context *c = find(context_id);
    if (c == NULL)
        rust_panic("rust_strict panicked at 'invalid context_id' (proxy_on_log for %u)",
                   context_id);
    if (c->kind != K_HTTP)
        return;
    struct context *root = root_for_stream(c);
    if (strcmp(root->scenario, "default") != 0)
        return;
    /* request and response headers stay readable in the access-log phase */
    char path[256], status[32];
    struct pairs hp;
    char *raw = get_map(MAP_HTTP_REQUEST_HEADERS, &hp);
    free(raw);
    if (!get_map_value(MAP_HTTP_REQUEST_HEADERS, ":path", path, sizeof path))
        strcpy(path, "<NOT_FOUND>");
    if (!get_map_value(MAP_HTTP_RESPONSE_HEADERS, ":status", status, sizeof status))
        strcpy(status, "<NOT_FOUND>");
    info("rust_strict: on_log :path=%s :status=%s request headers=%u", path, status, hp.n);
    char *p = NULL;
    uint32_t n = 0;
    uint32_t st = HC(ACC_PROPERTY, proxy_get_property, "response\0code", 13, &p, &n);
    if (st == PS_OK && n == 8) {
        int64_t code = 0;
        memcpy(&code, p, 8);
        info("rust_strict: on_log property response.code=%lld", (long long)code);
    } else {
        info("rust_strict: on_log property response.code: %s, %u bytes", status_name(st), n);
    }
    free(p);
}

PROXY_EXPORT(proxy_on_delete) void proxy_on_delete(uint32_t context_id) {
    need_init("proxy_on_delete");
    struct context *c = find(context_id);
    if (c == NULL)
        rust_panic("rust_strict panicked at 'invalid context_id' (proxy_on_delete for %u)",
                   context_id);
    debug("rust_strict: context %u deleted", context_id);
    c->kind = K_FREE;
}
