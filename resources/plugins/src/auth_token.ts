// auth_token (demo): rejects requests that lack "Bearer <token>" in a configurable header.
//
// Configuration (every field optional):
//   {"header": "authorization", "token": "demo-token", "deny_status": 403,
//    "allow_paths": ["/public"]}
// A request whose :path starts with one of allow_paths passes without a token. Otherwise the
// header must equal "Bearer <token>" exactly; if it is missing or different the plugin sends a
// local reply: status deny_status, body "forbidden: missing or invalid token\n", response header
// "x-wasmdesk-denied-by: auth_token".
// Counters: auth_token.allowed, auth_token.denied.

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, GrpcStatusValues, Headers, LogLevelValues, RootContext,
  log, registerRootContext, send_local_response, stream_context,
} from "@solo-io/proxy-runtime";
import { MetricTypeValues, define_metric, increment_metric } from "@solo-io/proxy-runtime/runtime";
import { acceptConfiguration, loadConfiguration } from "./lib/config";
import { header } from "./lib/hostcalls";
import { isHeaderValue, readHeaderName, startsWithAny } from "./lib/http";

const ROOT_ID = "auth_token";
const DENY_BODY = "forbidden: missing or invalid token\n";

class AuthTokenRoot extends RootContext {
  header_name: string = "authorization";
  expected: string = "Bearer demo-token";
  deny_status: u32 = 403;
  allow_paths: Array<string> = ["/public"];
  allowed_metric: u32 = 0;
  denied_metric: u32 = 0;
  metrics_defined: bool = false;

  createContext(context_id: u32): Context {
    return new AuthToken(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["header", "token", "deny_status", "allow_paths"]);
    const header_name = readHeaderName(config, "header", "authorization");
    const token = config.string("token", "demo-token");
    if (config.ok() && !isHeaderValue(token)) {
      config.errors.add("field \"token\" must not contain CR, LF or NUL");
    }
    const deny_status = config.integer("deny_status", 403, 200, 599);
    const allow_paths = config.stringList("allow_paths", ["/public"]);
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    if (!this.metrics_defined) {
      const allowed = define_metric(MetricTypeValues.Counter, "auth_token.allowed");
      const denied = define_metric(MetricTypeValues.Counter, "auth_token.denied");
      if (allowed.result != 0 || denied.result != 0) {
        log(LogLevelValues.error, ROOT_ID + ": cannot define the metrics");
        return false;
      }
      this.allowed_metric = allowed.metric_id;
      this.denied_metric = denied.metric_id;
      this.metrics_defined = true;
    }
    this.header_name = header_name;
    this.expected = "Bearer " + token;
    this.deny_status = <u32>deny_status;
    this.allow_paths = allow_paths;
    return true;
  }
}

class AuthToken extends Context {
  root: AuthTokenRoot;

  constructor(context_id: u32, root: AuthTokenRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root;
    const path = stream_context.headers.request.get(":path");
    if (startsWithAny(path, root.allow_paths)) {
      increment_metric(root.allowed_metric, 1);
      log(LogLevelValues.debug, "auth_token: allowed " + path + " (allow_paths)");
      return FilterHeadersStatusValues.Continue;
    }
    const presented = stream_context.headers.request.get(root.header_name);
    if (presented == root.expected) {
      increment_metric(root.allowed_metric, 1);
      log(LogLevelValues.debug, "auth_token: allowed " + path);
      return FilterHeadersStatusValues.Continue;
    }
    increment_metric(root.denied_metric, 1);
    const reason = presented.length == 0 ? "missing " : "invalid ";
    log(LogLevelValues.info, "auth_token: denied " + path + " (" + reason + root.header_name + ")");
    const headers: Headers = [header("x-wasmdesk-denied-by", "auth_token")];
    send_local_response(root.deny_status, "auth_token_denied", String.UTF8.encode(DENY_BODY), headers,
      GrpcStatusValues.InvalidCode);
    return FilterHeadersStatusValues.StopIteration;
  }
}

registerRootContext((context_id: u32): RootContext => new AuthTokenRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new AuthTokenRoot(context_id), "");
