// Small HTTP helpers shared by the plugins.

import { ConfigReader } from "./config";

// RFC 9110 token characters, which is what a header field name must consist of.
export function isHeaderName(name: string): bool {
  if (name.length == 0) return false;
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    const alnum = (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
    // ! # $ % & ' * + - . ^ _ ` | ~
    const special = c == 0x21 || (c >= 0x23 && c <= 0x27) || c == 0x2a || c == 0x2b || c == 0x2d ||
      c == 0x2e || c == 0x5e || c == 0x5f || c == 0x60 || c == 0x7c || c == 0x7e;
    if (!alnum && !special) return false;
  }
  return true;
}

// A header value must not contain CR, LF or NUL.
export function isHeaderValue(value: string): bool {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c == 0x0d || c == 0x0a || c == 0x00) return false;
  }
  return true;
}

// Reads a header name field (a non-empty token) from a configuration object.
export function readHeaderName(config: ConfigReader, key: string, def: string): string {
  const name = config.string(key, def, false);
  if (config.ok() && !isHeaderName(name)) {
    config.errors.add("field \"" + config.prefix + key + "\" is not a valid header name: \"" + name + "\"");
  }
  return name;
}

// Reads a header value field (a string without CR, LF or NUL) from a configuration object.
export function readHeaderValue(config: ConfigReader, key: string, def: string): string {
  const value = config.string(key, def);
  if (config.ok() && !isHeaderValue(value)) {
    config.errors.add("field \"" + config.prefix + key + "\" must not contain CR, LF or NUL");
  }
  return value;
}

export function startsWithAny(text: string, prefixes: Array<string>): bool {
  for (let i = 0; i < prefixes.length; i++) {
    if (text.startsWith(prefixes[i])) return true;
  }
  return false;
}
