// body_rewrite (demo): rewrites text in response bodies.
//
// Configuration (every field optional):
//   {"from": "hello", "to": "HELLO", "content_types": ["text/", "application/json"]}
// A response is rewritten only when its content-type header starts with one of content_types
// (compared case-insensitively; an empty string matches every response, even one without a
// content-type). For such a response the plugin removes content-length in on_response_headers,
// buffers the body until end_of_stream, replaces every occurrence of "from" with "to" (bytes,
// non-overlapping, left to right), writes the body back and logs at info
// "body_rewrite: <n> replacements". Other responses pass untouched.

export * from "./lib/abi";
import {
  Context, FilterDataStatusValues, FilterHeadersStatusValues, LogLevelValues, RootContext, log,
  registerRootContext, stream_context,
} from "@solo-io/proxy-runtime";
import { BufferTypeValues, HeaderMapTypeValues, get_buffer_bytes } from "@solo-io/proxy-runtime/runtime";
import { replaceAll } from "./lib/bytes";
import { acceptConfiguration, loadConfiguration } from "./lib/config";
import { removeHeader, setBufferBytes } from "./lib/hostcalls";
import { startsWithAny } from "./lib/http";

const ROOT_ID = "body_rewrite";

class BodyRewriteRoot extends RootContext {
  from: ArrayBuffer = String.UTF8.encode("hello");
  to: ArrayBuffer = String.UTF8.encode("HELLO");
  content_types: Array<string> = ["text/", "application/json"];

  createContext(context_id: u32): Context {
    return new BodyRewrite(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["from", "to", "content_types"]);
    const from = config.string("from", "hello", false);
    const to = config.string("to", "HELLO");
    const content_types = config.stringList("content_types", ["text/", "application/json"]);
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    const lowered = new Array<string>();
    for (let i = 0; i < content_types.length; i++) lowered.push(content_types[i].toLowerCase());
    this.from = String.UTF8.encode(from);
    this.to = String.UTF8.encode(to);
    this.content_types = lowered;
    return true;
  }
}

class BodyRewrite extends Context {
  root: BodyRewriteRoot;
  rewrite: bool = false;

  constructor(context_id: u32, root: BodyRewriteRoot) {
    super(context_id, root);
    this.root = root;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    if (end_of_stream) return FilterHeadersStatusValues.Continue;
    const content_type = stream_context.headers.response.get("content-type").toLowerCase();
    this.rewrite = startsWithAny(content_type, this.root.content_types);
    if (this.rewrite) {
      // The body length may change.
      removeHeader(HeaderMapTypeValues.ResponseHeaders, "content-length");
    }
    return FilterHeadersStatusValues.Continue;
  }

  onResponseBody(body_buffer_length: usize, end_of_stream: bool): FilterDataStatusValues {
    if (!this.rewrite) return FilterDataStatusValues.Continue;
    if (!end_of_stream) return FilterDataStatusValues.StopIterationAndBuffer;
    const size = <u32>body_buffer_length;
    const body = get_buffer_bytes(BufferTypeValues.HttpResponseBody, 0, size);
    const replaced = replaceAll(body, this.root.from, this.root.to);
    if (replaced.count > 0) {
      const status = setBufferBytes(BufferTypeValues.HttpResponseBody, 0, size, replaced.data);
      if (status != 0) {
        log(LogLevelValues.warn, "body_rewrite: cannot replace the body (status " + status.toString() + ")");
      }
    }
    log(LogLevelValues.info, "body_rewrite: " + replaced.count.toString() + " replacements");
    return FilterDataStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new BodyRewriteRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new BodyRewriteRoot(context_id), "");
