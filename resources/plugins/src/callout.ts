// callout (test): asks an auth service over an HTTP callout before letting a request through.
//
// Configuration (every field optional):
//   {"cluster": "auth", "path": "/check", "authority": "auth.local", "timeout_ms": 1000}
// on_request_headers: proxy_http_call to `cluster` with headers :method GET, :path <path>,
// :authority <authority> (+ the request's "authorization" header when present and non-empty),
// no body, timeout timeout_ms; returns StopIteration (pause).
// on_http_call_response:
//   - no response (num_headers == 0)  -> local reply 503, body "callout failed\n"
//   - callout :status 200             -> request header "x-auth-result: <callout body, trimmed>",
//                                        continue the request
//   - any other status                -> local reply 403, body "denied by callout: <status>\n"
// If proxy_http_call itself fails the request gets the 503 reply at once.
// Every step is logged at info (lines listed in resources/plugins/README.md).

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, GrpcStatusValues, Headers, LogLevelValues, RootContext,
  continue_request, log, registerRootContext, send_local_response, stream_context,
} from "@solo-io/proxy-runtime";
import { BufferTypeValues, get_buffer_bytes } from "@solo-io/proxy-runtime/runtime";
import { acceptConfiguration, loadConfiguration } from "./lib/config";
import { header } from "./lib/hostcalls";
import { isHeaderValue } from "./lib/http";

const ROOT_ID = "callout";

class CalloutRoot extends RootContext {
  cluster: string = "auth";
  path: string = "/check";
  authority: string = "auth.local";
  timeout_ms: u32 = 1000;

  createContext(context_id: u32): Context {
    return new Callout(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["cluster", "path", "authority", "timeout_ms"]);
    const cluster = config.string("cluster", "auth", false);
    const path = config.string("path", "/check", false);
    const authority = config.string("authority", "auth.local", false);
    const timeout_ms = config.integer("timeout_ms", 1000, 0, 3600000);
    if (config.ok() && !(isHeaderValue(path) && isHeaderValue(authority))) {
      config.errors.add("fields \"path\" and \"authority\" must not contain CR, LF or NUL");
    }
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    this.cluster = cluster;
    this.path = path;
    this.authority = authority;
    this.timeout_ms = <u32>timeout_ms;
    return true;
  }

  // The SDK's default answers every pending callout with "no response" on shutdown, without
  // switching to the stream the callout belongs to; pending callouts are dropped instead.
  onDone(): bool {
    return true;
  }
}

// Called by the SDK (after proxy_set_effective_context to the originating stream).
function onCalloutResponse(origin: Context, num_headers: u32, body_size: usize, num_trailers: u32): void {
  changetype<Callout>(origin).calloutDone(num_headers, body_size);
}

class Callout extends Context {
  root: CalloutRoot;
  deleted: bool = false;

  constructor(context_id: u32, root: CalloutRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const root = this.root;
    const headers: Headers = [
      header(":method", "GET"),
      header(":path", root.path),
      header(":authority", root.authority),
    ];
    const authorization = stream_context.headers.request.get("authorization");
    if (authorization.length > 0) headers.push(header("authorization", authorization));
    log(LogLevelValues.info, "callout: dispatching GET " + root.path + " to " + root.cluster);
    const status = root.httpCall(root.cluster, headers, new ArrayBuffer(0), [], root.timeout_ms, this,
      onCalloutResponse);
    if (status != 0) {
      log(LogLevelValues.info, "callout: dispatch failed (status " + status.toString() + "), replying 503");
      this.reply(503, "callout_failed", "callout failed\n");
    }
    return FilterHeadersStatusValues.StopIteration;
  }

  calloutDone(num_headers: u32, body_size: usize): void {
    if (this.deleted) {
      log(LogLevelValues.info, "callout: stream " + this.context_id.toString() + " is gone, response dropped");
      return;
    }
    if (num_headers == 0) {
      log(LogLevelValues.info, "callout: call failed, replying 503");
      this.reply(503, "callout_failed", "callout failed\n");
      return;
    }
    const status = stream_context.headers.http_callback.get(":status");
    if (status != "200") {
      log(LogLevelValues.info, "callout: denied with status " + status + ", replying 403");
      this.reply(403, "callout_denied", "denied by callout: " + status + "\n");
      return;
    }
    const body = get_buffer_bytes(BufferTypeValues.HttpCallResponseBody, 0, <u32>body_size);
    const result = String.UTF8.decode(body).trim();
    stream_context.headers.request.add("x-auth-result", result);
    log(LogLevelValues.info, "callout: allowed, x-auth-result: " + result);
    continue_request();
  }

  reply(status: u32, details: string, body: string): void {
    send_local_response(status, details, String.UTF8.encode(body), [], GrpcStatusValues.InvalidCode);
  }

  onDelete(): void {
    this.deleted = true;
  }
}

registerRootContext((context_id: u32): RootContext => new CalloutRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new CalloutRoot(context_id), "");
