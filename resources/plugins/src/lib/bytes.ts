// Byte-buffer helpers for the body plugins (bodies are bytes, not necessarily UTF-8).

export class Replaced {
  data: ArrayBuffer;
  count: i32;

  constructor(data: ArrayBuffer, count: i32) {
    this.data = data;
    this.count = count;
  }
}

// Replaces every non-overlapping occurrence of `from` (scanning left to right) with `to`.
// `from` must not be empty. When nothing matches, `data` is the input buffer itself.
export function replaceAll(input: ArrayBuffer, from: ArrayBuffer, to: ArrayBuffer): Replaced {
  const src = Uint8Array.wrap(input);
  const pat = Uint8Array.wrap(from);
  const rep = Uint8Array.wrap(to);
  const n = src.length;
  const m = pat.length;
  // First pass: count matches.
  let count = 0;
  let i = 0;
  while (m > 0 && i + m <= n) {
    if (matchesAt(src, pat, i)) {
      count++;
      i += m;
    } else {
      i++;
    }
  }
  if (count == 0) return new Replaced(input, 0);
  // Second pass: copy.
  const out = new Uint8Array(n + count * (rep.length - m));
  let o = 0;
  i = 0;
  while (i < n) {
    if (i + m <= n && matchesAt(src, pat, i)) {
      for (let k = 0; k < rep.length; k++) out[o++] = rep[k];
      i += m;
    } else {
      out[o++] = src[i++];
    }
  }
  return new Replaced(out.buffer, count);
}

function matchesAt(src: Uint8Array, pat: Uint8Array, at: i32): bool {
  for (let k = 0; k < pat.length; k++) {
    if (src[at + k] != pat[k]) return false;
  }
  return true;
}

// ASCII a-z -> A-Z; every other byte (including UTF-8 multi-byte sequences) is kept, so the
// length never changes.
export function asciiUpper(input: ArrayBuffer): ArrayBuffer {
  const src = Uint8Array.wrap(input);
  const out = new Uint8Array(src.length);
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    out[i] = c >= 0x61 && c <= 0x7a ? c - 0x20 : c;
  }
  return out.buffer;
}
