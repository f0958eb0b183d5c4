"""The serialized pairs format and HeaderMap (ABI doc §5.1, §2.2 "Header maps")."""

from __future__ import annotations

import struct

import pytest

from host.wasm.pairs import (
    MAX_PAIRS,
    MAX_PAIRS_BYTES,
    HeaderMap,
    PairsError,
    decode_pairs,
    encode_pairs,
    serialized_size,
)

# The corrected example of ABI doc §5.1: [("a", "1"), ("b", "22")], 29 bytes.
DOC_EXAMPLE = bytes.fromhex(
    "02000000"
    "01000000" "01000000"
    "01000000" "02000000"
    "6100" "3100" "6200" "323200"
)


def _raw(count: int, sizes: list[int], data: bytes) -> bytes:
    return struct.pack(f"<{1 + len(sizes)}I", count, *sizes) + data


# -- encoding ------------------------------------------------------------------------


def test_doc_example_encodes_to_the_exact_29_bytes():
    out = encode_pairs([(b"a", b"1"), (b"b", b"22")])
    assert len(out) == 29
    assert out == DOC_EXAMPLE


def test_doc_example_decodes_to_its_pairs():
    assert decode_pairs(DOC_EXAMPLE) == [(b"a", b"1"), (b"b", b"22")]


def test_empty_map_encodes_to_no_bytes_at_all():
    assert encode_pairs([]) == b""
    assert encode_pairs(HeaderMap()) == b""


def test_round_trip_keeps_order_duplicates_empty_values_and_raw_bytes():
    pairs = [
        (b":path", b"/x?y=1"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
        (b"x-empty", b""),
        (b"x-bin", bytes(range(1, 256))),  # not UTF-8; NULs excluded from values
    ]
    assert decode_pairs(encode_pairs(pairs)) == pairs


def test_encoding_puts_all_sizes_before_all_data():
    out = encode_pairs([(b"kk", b"vvv"), (b"k", b"")])
    assert struct.unpack_from("<5I", out) == (2, 2, 3, 1, 0)
    assert out[20:] == b"kk\0vvv\0k\0\0"


# -- decoding: empty forms -----------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\0"], ids=["empty", "single_nul"])
def test_empty_and_single_nul_buffers_decode_to_no_pairs(data):
    assert decode_pairs(data) == []


def test_count_zero_buffer_decodes_to_no_pairs():
    # What SDKs send for an empty map.
    assert decode_pairs(b"\0\0\0\0") == []


# -- decoding: malformed input -------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\x01\x00", id="shorter_than_count"),
        pytest.param(b"\x01\x00\x00\x00\x01\x00\x00\x00", id="size_table_truncated"),
        pytest.param(_raw(2, [1, 1], b"a\x001\x00"), id="second_sizes_missing"),
        pytest.param(_raw(1, [1, 1], b"a\x001"), id="value_nul_missing_at_end"),
        pytest.param(_raw(1, [1, 1], b"aX1\x00"), id="key_not_nul_terminated"),
        pytest.param(_raw(1, [1, 1], b"a\x001X"), id="value_not_nul_terminated"),
        pytest.param(_raw(1, [5, 1], b"a\x001\x00"), id="key_longer_than_data"),
        pytest.param(_raw(1, [1, 1], b"a\x001\x00extra"), id="trailing_bytes"),
        pytest.param(_raw(0, [], b"\x00"), id="count_zero_with_trailing_byte"),
        pytest.param(_raw(1, [0xFFFFFFFF, 0], b"\x00\x00"), id="huge_key_length"),
        pytest.param(DOC_EXAMPLE[:-1], id="doc_example_minus_last_byte"),
        pytest.param(DOC_EXAMPLE + b"\0", id="doc_example_plus_a_byte"),
    ],
)
def test_malformed_pairs_raise_pairs_error(data):
    with pytest.raises(PairsError):
        decode_pairs(data)


def test_more_than_1024_pairs_is_refused_but_1024_is_accepted():
    ok = encode_pairs([(b"k", b"")] * MAX_PAIRS)
    assert len(decode_pairs(ok)) == MAX_PAIRS
    too_many = encode_pairs([(b"k", b"")] * (MAX_PAIRS + 1))
    with pytest.raises(PairsError):
        decode_pairs(too_many)


def test_count_above_1024_is_refused_before_reading_sizes():
    with pytest.raises(PairsError):
        decode_pairs(struct.pack("<I", MAX_PAIRS + 1) + b"\0" * 64)


def test_buffer_over_one_mebibyte_is_refused_but_exactly_one_is_accepted():
    assert MAX_PAIRS_BYTES == 1 << 20
    overhead = 4 + 8 + 2 + 1  # count, sizes, two NULs, 1-byte key
    exact = encode_pairs([(b"k", b"v" * (MAX_PAIRS_BYTES - overhead))])
    assert len(exact) == MAX_PAIRS_BYTES
    assert decode_pairs(exact)[0][1] == b"v" * (MAX_PAIRS_BYTES - overhead)
    over = encode_pairs([(b"k", b"v" * (MAX_PAIRS_BYTES - overhead + 1))])
    with pytest.raises(PairsError):
        decode_pairs(over)


def test_pairs_error_is_a_value_error():
    assert issubclass(PairsError, ValueError)


# -- HeaderMap -----------------------------------------------------------------------


def test_header_map_lower_cases_keys_and_keeps_values_verbatim():
    m = HeaderMap([("Content-Type", "Text/HTML"), (b"X-Raw", b"\xff\xfe")])
    assert m.items() == [(b"content-type", b"Text/HTML"), (b"x-raw", b"\xff\xfe")]


def test_header_map_from_pairs_lower_cases_keys():
    m = HeaderMap.from_pairs([(b"A", b"1"), (b"b", b"2")])
    assert m.items() == [(b"a", b"1"), (b"b", b"2")]


def test_get_is_case_insensitive_and_returns_the_first_value():
    m = HeaderMap([("x-a", "1"), ("X-A", "2")])
    assert m.get("X-a") == b"1"
    assert m.get(b"x-A") == b"1"
    assert m.get("missing") is None


def test_add_appends_and_keeps_duplicates_in_order():
    m = HeaderMap([("a", "1")])
    m.add("B", "2")
    m.add("a", "3")
    assert m.items() == [(b"a", b"1"), (b"b", b"2"), (b"a", b"3")]
    assert m.get_all("A") == [b"1", b"3"]
    assert m.joined("a") == b"1,3"
    assert m.joined("nope") is None


def test_replace_keeps_one_value_at_the_first_position():
    m = HeaderMap([("a", "1"), ("b", "2"), ("A", "3"), ("c", "4")])
    m.replace("A", "9")
    assert m.items() == [(b"a", b"9"), (b"b", b"2"), (b"c", b"4")]


def test_replace_of_a_missing_key_appends_it():
    m = HeaderMap([("a", "1")])
    m.replace("New", "x")
    assert m.items() == [(b"a", b"1"), (b"new", b"x")]


def test_remove_drops_every_value_of_the_key_and_ignores_missing_keys():
    m = HeaderMap([("a", "1"), ("b", "2"), ("A", "3")])
    m.remove("A")
    assert m.items() == [(b"b", b"2")]
    m.remove("never-there")
    assert m.items() == [(b"b", b"2")]


def test_set_all_replaces_everything_and_lower_cases():
    m = HeaderMap([("a", "1")])
    m.set_all([(b"X-Y", b"z"), (b"x-y", b"w")])
    assert m.items() == [(b"x-y", b"z"), (b"x-y", b"w")]
    assert len(m) == 2


@pytest.mark.parametrize(
    "items",
    [
        [],
        [("a", "1")],
        [("a", "1"), ("b", "22")],
        [(":status", "200"), ("set-cookie", "a"), ("set-cookie", "bb"), ("x", "")],
    ],
)
def test_serialized_size_equals_the_length_of_serialize(items):
    m = HeaderMap(items)
    assert serialized_size(m) == len(encode_pairs(m))


def test_serialize_round_trips_through_decode():
    m = HeaderMap([("A", "1"), ("b", "22")])
    assert encode_pairs(m) == DOC_EXAMPLE
    assert HeaderMap.from_pairs(decode_pairs(encode_pairs(m))) == m


def test_byte_size_is_the_sum_of_key_and_value_lengths():
    assert HeaderMap([("ab", "cde"), ("f", "")]).byte_size() == 6


def test_copy_is_independent_of_the_original():
    m = HeaderMap([("a", "1")])
    c = m.copy()
    c.add("b", "2")
    assert m.items() == [(b"a", b"1")]
    assert c.items() == [(b"a", b"1"), (b"b", b"2")]
