// ticker (test): a periodic timer.
//
// Configuration (optional): {"period_ms": 1000}   (0 turns the timer off)
// on_configure: proxy_set_tick_period_milliseconds(period_ms); defines counter "ticker.ticks".
// on_tick: n += 1, increments "ticker.ticks", logs at info "tick <n>".
// on_request_headers: adds request header "x-ticks: <n>" (ticks so far, 0 before the first).

export * from "./lib/abi";
import {
  Context, FilterHeadersStatusValues, LogLevelValues, RootContext, WasmResultValues, log,
  registerRootContext, stream_context,
} from "@solo-io/proxy-runtime";
import * as imports from "@solo-io/proxy-runtime/imports";
import { MetricTypeValues, define_metric, increment_metric } from "@solo-io/proxy-runtime/runtime";
import { acceptConfiguration, loadConfiguration } from "./lib/config";

const ROOT_ID = "ticker";

class TickerRoot extends RootContext {
  ticks: u64 = 0;
  ticks_metric: u32 = 0;
  metric_defined: bool = false;

  createContext(context_id: u32): Context {
    return new Ticker(context_id, this);
  }

  onConfigure(configuration_size: u32): bool {
    const config = loadConfiguration(ROOT_ID, configuration_size);
    if (config === null) return false;
    config.allowOnly(["period_ms"]);
    const period_ms = config.integer("period_ms", 1000, 0, 86400000);
    if (!acceptConfiguration(ROOT_ID, config)) return false;
    if (!this.metric_defined) {
      const defined = define_metric(MetricTypeValues.Counter, "ticker.ticks");
      if (defined.result != WasmResultValues.Ok) {
        log(LogLevelValues.error, ROOT_ID + ": cannot define the metric ticker.ticks");
        return false;
      }
      this.ticks_metric = defined.metric_id;
      this.metric_defined = true;
    }
    const status = imports.proxy_set_tick_period_milliseconds(<u32>period_ms);
    if (status != WasmResultValues.Ok) {
      log(LogLevelValues.error, ROOT_ID + ": proxy_set_tick_period_milliseconds failed (status " + status.toString() + ")");
      return false;
    }
    return true;
  }

  onTick(): void {
    this.ticks++;
    increment_metric(this.ticks_metric, 1);
    log(LogLevelValues.info, "tick " + this.ticks.toString());
  }
}

class Ticker extends Context {
  root: TickerRoot;

  constructor(context_id: u32, root: TickerRoot) {
    super(context_id, root);
    this.root = root;
  }

  onRequestHeaders(num_headers: u32, end_of_stream: bool): FilterHeadersStatusValues {
    stream_context.headers.request.add("x-ticks", this.root.ticks.toString());
    return FilterHeadersStatusValues.Continue;
  }
}

registerRootContext((context_id: u32): RootContext => new TickerRoot(context_id), ROOT_ID);
// Also the default root (""): what Envoy/Istio use when pluginName / root_id is unset,
// as C++ SDK plugins do with their unnamed factories.
registerRootContext((context_id: u32): RootContext => new TickerRoot(context_id), "");
