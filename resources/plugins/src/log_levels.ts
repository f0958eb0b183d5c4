// log_levels (test): one log line per level.
//
// on_configure logs, in this order: trace "level trace", debug "level debug", info "level info",
// warn "level warn", error "level error", critical "level critical", and returns true.
// (There is no "log level is <n>" line: @solo-io/proxy-runtime 0.1.8 exposes no
// proxy_get_log_level and its modules declare ABI 0.2.0, where that call does not exist.)
// on_request_headers logs at info "request <path>". No configuration (ignored, unread).

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, LogLevelValues, RootContext, log, registerRootContext,
  stream_context,
} from "@solo-io/proxy-runtime";

class LogLevelsRoot extends RootContext {
  createContext(context_id: u32): Context {
    return new LogLevels(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    log(LogLevelValues.trace, "level trace");
    log(LogLevelValues.debug, "level debug");
    log(LogLevelValues.info, "level info");
    log(LogLevelValues.warn, "level warn");
    log(LogLevelValues.error, "level error");
    log(LogLevelValues.critical, "level critical");
    return true;
  }
}

class LogLevels extends Context {
  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    log(LogLevelValues.info, "request " + stream_context.headers.request.get(":path"));
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new LogLevelsRoot(context_id), "log_levels");
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new LogLevelsRoot(context_id), "");
