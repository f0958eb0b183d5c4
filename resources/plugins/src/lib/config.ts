// Plugin configuration handling shared by the plugins that take a JSON configuration.
//
// Rules (documented in resources/plugins/README.md):
// - an empty configuration, or one made only of whitespace and NUL bytes, means "all defaults"
//   (some hosts hand the SDK an empty configuration as a single NUL byte);
// - otherwise it must be a JSON object; unknown fields are rejected, a field set to null takes
//   its default;
// - on any error onConfigure logs "<root_id>: <what is wrong>" at error level, returns false and
//   keeps the previous settings.

import { log, LogLevelValues } from "@solo-io/proxy-runtime";
import { JsonParser, JsonValue } from "./json";
import { readPluginConfiguration } from "./hostcalls";

export function isBlankConfiguration(text: string): bool {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c != 0x20 && c != 0x09 && c != 0x0a && c != 0x0d && c != 0x00) return false;
  }
  return true;
}

// Drops trailing NUL bytes (a C-string terminator some hosts include).
function stripTrailingNuls(text: string): string {
  let end = text.length;
  while (end > 0 && text.charCodeAt(end - 1) == 0) end--;
  return end == text.length ? text : text.substring(0, end);
}

// Collects the first error found while reading a configuration.
export class ConfigErrors {
  first: string = "";

  add(message: string): void {
    if (this.first == "") this.first = message;
  }
}

// Typed, validating access to one JSON object of the configuration. Every getter returns the
// default when the field is absent or null, and records an error on a wrong type.
export class ConfigReader {
  obj: JsonValue;
  prefix: string;
  errors: ConfigErrors;

  constructor(obj: JsonValue, prefix: string, errors: ConfigErrors) {
    this.obj = obj;
    this.prefix = prefix;
    this.errors = errors;
  }

  ok(): bool {
    return this.errors.first == "";
  }

  private path(key: string): string {
    return this.prefix + key;
  }

  private value(key: string): JsonValue | null {
    const v = this.obj.get(key);
    if (v === null) return null;
    if (v.isNull()) return null;
    return v;
  }

  private wrongType(key: string, expected: string, got: JsonValue): void {
    this.errors.add("field \"" + this.path(key) + "\" must be " + expected + " (got " + got.typeName() + ")");
  }

  // Records an error for each field not in `allowed`.
  allowOnly(allowed: Array<string>): void {
    for (let i = 0; i < this.obj.keys.length; i++) {
      const key = this.obj.keys[i];
      let known = false;
      for (let j = 0; j < allowed.length; j++) {
        if (allowed[j] == key) known = true;
      }
      if (!known) {
        this.errors.add("unknown field \"" + this.path(key) + "\"");
      }
    }
  }

  requireField(key: string): void {
    if (this.value(key) === null) {
      this.errors.add("missing required field \"" + this.path(key) + "\"");
    }
  }

  string(key: string, def: string, allowEmpty: bool = true): string {
    const v = this.value(key);
    if (v === null) return def;
    if (!v.isString()) {
      this.wrongType(key, allowEmpty ? "a string" : "a non-empty string", v);
      return def;
    }
    if (!allowEmpty && v.strValue.length == 0) {
      this.errors.add("field \"" + this.path(key) + "\" must be a non-empty string");
      return def;
    }
    return v.strValue;
  }

  boolean(key: string, def: bool): bool {
    const v = this.value(key);
    if (v === null) return def;
    if (!v.isBool()) {
      this.wrongType(key, "a boolean", v);
      return def;
    }
    return v.boolValue;
  }

  integer(key: string, def: i64, min: i64, max: i64): i64 {
    const v = this.value(key);
    if (v === null) return def;
    if (!v.isInteger()) {
      if (v.isNumber()) {
        this.errors.add("field \"" + this.path(key) + "\" must be an integer (got " + v.numValue.toString() + ")");
      } else {
        this.wrongType(key, "an integer", v);
      }
      return def;
    }
    const n = <i64>v.numValue;
    if (n < min || n > max) {
      this.errors.add("field \"" + this.path(key) + "\" must be between " + min.toString() + " and " +
        max.toString() + " (got " + n.toString() + ")");
      return def;
    }
    return n;
  }

  stringList(key: string, def: Array<string>): Array<string> {
    const v = this.value(key);
    if (v === null) return def;
    if (!v.isArray()) {
      this.wrongType(key, "an array of strings", v);
      return def;
    }
    const out = new Array<string>();
    for (let i = 0; i < v.items.length; i++) {
      const item = v.items[i];
      if (!item.isString()) {
        this.errors.add("field \"" + this.path(key) + "[" + i.toString() + "]\" must be a string (got " +
          item.typeName() + ")");
        return def;
      }
      out.push(item.strValue);
    }
    return out;
  }

  // A reader for a nested object; an absent or null field reads as an empty object.
  object(key: string): ConfigReader {
    const v = this.value(key);
    if (v === null) return new ConfigReader(JsonValue.makeObject(), this.path(key) + ".", this.errors);
    if (!v.isObject()) {
      this.wrongType(key, "an object", v);
      return new ConfigReader(JsonValue.makeObject(), this.path(key) + ".", this.errors);
    }
    return new ConfigReader(v, this.path(key) + ".", this.errors);
  }
}

// Parses a plugin configuration; on failure returns null and logs "<root_id>: <error>".
export function parseConfiguration(root_id: string, text: string): ConfigReader | null {
  const errors = new ConfigErrors();
  if (isBlankConfiguration(text)) {
    return new ConfigReader(JsonValue.makeObject(), "", errors);
  }
  const parser = new JsonParser(stripTrailingNuls(text));
  const value = parser.parse();
  if (parser.error != "") {
    log(LogLevelValues.error, root_id + ": " + parser.error);
    return null;
  }
  if (!value.isObject()) {
    log(LogLevelValues.error, root_id + ": the configuration must be a JSON object (got " + value.typeName() + ")");
    return null;
  }
  return new ConfigReader(value, "", errors);
}

// Reads and parses the plugin configuration of an onConfigure call. Returns null (after logging
// "<root_id>: <error>") when it is not valid JSON or not an object. A plugin's onConfigure then
// reads its fields through the returned reader and finishes with acceptConfiguration().
//
// Plugins deliberately do not share a base RootContext class with an overridable "apply" hook:
// AssemblyScript 0.14.9 leaves a virtual-method stub as a bare `unreachable` when the first call
// through it is compiled while other virtual stubs are being finalized (compiler.ts,
// finalizeVirtualStub iterates a snapshot of `virtualCalls`), and an overridden onConfigure is
// compiled exactly then. Only direct calls are made from plugin callbacks.
export function loadConfiguration(root_id: string, configuration_size: u32): ConfigReader | null {
  return parseConfiguration(root_id, readPluginConfiguration(configuration_size));
}

// True when no error was recorded; otherwise logs "<root_id>: <first error>" and returns false.
export function acceptConfiguration(root_id: string, config: ConfigReader): bool {
  if (config.ok()) return true;
  log(LogLevelValues.error, root_id + ": " + config.errors.first);
  return false;
}
