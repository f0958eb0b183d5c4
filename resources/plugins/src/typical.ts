// typical (test): the benchmark's "typical header plugin".
//
// on_request_headers: reads ":path" and "user-agent", adds "x-typical: 1", logs at info
// "typical <path> <user-agent>" (a missing header reads as ""). on_response_headers: adds
// "x-typical-response: 1". No configuration (whatever is configured is ignored, unread).

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, LogLevelValues, RootContext, log, registerRootContext,
  stream_context,
} from "@solo-io/proxy-runtime";

class TypicalRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new Typical(context_id, this);
  }

  // Replaces the SDK's onConfigure, which would read (and log) the configuration.
  onConfigure(configuration_size: u32): bool {
    return true;
  }
}

class Typical extends Context {
  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    const path = stream_context.headers.request.get(":path");
    const user_agent = stream_context.headers.request.get("user-agent");
    stream_context.headers.request.add("x-typical", "1");
    log(LogLevelValues.info, "typical " + path + " " + user_agent);
    return FilterHeadersStatusValues.Continue;
  }

  onResponseHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.response.add("x-typical-response", "1");
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new TypicalRoot(context_id), "typical");
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new TypicalRoot(context_id), "");
