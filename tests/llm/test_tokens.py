"""Token counts, image tokens, image headers and cost (labbot.llm.tokens) against documented
cases (tests/fixtures/token_cases.py) and the in-repo image fixtures."""

from __future__ import annotations

import base64
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from importlib import metadata
from pathlib import Path

import pytest
import tiktoken.model

from labbot.llm import tokens
from tests.fixtures import FORMATS, MANIFEST
from tests.fixtures import token_cases as cases

IMAGES = FORMATS / "images"
ROOT = Path(__file__).resolve().parents[2]
OFFLINE_ENCODINGS = {"cl100k_base": "gpt-4", "o200k_base": "gpt-4o"}


# --- strings, messages, tools --------------------------------------------------------------------

STRING_CASES = [
    pytest.param(text, enc, ids, id=f"{enc}-{i}")
    for i, (text, by_encoding) in enumerate(cases.TOKEN_IDS)
    for enc, ids in by_encoding.items()
]


@pytest.mark.parametrize(("text", "encoding", "ids"), STRING_CASES)
def test_string_token_ids(text: str, encoding: str, ids: list[int]) -> None:
    """The bundled BPE files give the cookbook's token ids, and count_text their number."""
    model = OFFLINE_ENCODINGS[encoding]
    assert tokens.get_encoding(model).encode(text) == ids
    assert tokens.count_text(text, model) == len(ids)


@pytest.mark.parametrize(("model", "expected"), sorted(cases.JARGON_PROMPT_TOKENS.items()))
def test_chat_messages(model: str, expected: int) -> None:
    """The cookbook's six messages count as the API reported, per model."""
    assert tokens.count_messages(cases.JARGON_MESSAGES, model) == expected


@pytest.mark.parametrize(("model", "expected"), sorted(cases.WEATHER_PROMPT_TOKENS.items()))
def test_chat_with_tools(model: str, expected: int) -> None:
    """Messages plus the get_current_weather tool count as the API reported, per model."""
    got = tokens.count_messages(cases.WEATHER_MESSAGES, model, tools=cases.WEATHER_TOOLS)
    assert got == expected


@pytest.mark.parametrize(("encoding", "expected"), sorted(cases.TOOL_RULES.items()))
def test_tool_rule_constants(encoding: str, expected: dict[str, int]) -> None:
    """Our per-encoding tool constants are the notebook's."""
    assert tokens.TOOL_RULES[encoding]._asdict() == expected


def test_count_tools_is_the_difference() -> None:
    """count_tools is exactly what tools add to count_messages, and 0 without tools."""
    messages, tools = cases.WEATHER_MESSAGES, cases.WEATHER_TOOLS
    with_tools = tokens.count_messages(messages, "gpt-4o", tools=tools)
    without = tokens.count_messages(messages, "gpt-4o")
    assert with_tools - without == tokens.count_tools(tools, "gpt-4o")
    assert tokens.count_tools([], "gpt-4o") == 0


def test_tool_calls_and_tool_messages() -> None:
    """Assistant tool_calls and role "tool" replies add their name, arguments and content."""
    call = {"id": "call_1", "type": "function", "function": {"name": "run", "arguments": '{"a":1}'}}
    base = [{"role": "user", "content": "hi"}]
    assistant = {"role": "assistant", "content": None, "tool_calls": [call]}
    reply = {"role": "tool", "tool_call_id": "call_1", "content": "42"}
    n0 = tokens.count_messages(base, "gpt-4o")
    n1 = tokens.count_messages([*base, assistant], "gpt-4o")
    n2 = tokens.count_messages([*base, assistant, reply], "gpt-4o")
    name_args = tokens.count_text("run", "gpt-4o") + tokens.count_text('{"a":1}', "gpt-4o")
    assert n1 - n0 == 3 + tokens.count_text("assistant", "gpt-4o") + name_args + 3
    assert n2 - n1 == 3 + sum(tokens.count_text(s, "gpt-4o") for s in ("tool", "call_1", "42"))


MODEL_NAMES = [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-5", "gpt-5-mini", "o1", "o3",
    "o4-mini", "gpt-4", "gpt-4-0613", "gpt-4-turbo", "gpt-3.5-turbo", "gpt-4o-2024-08-06",
]  # fmt: skip


@pytest.mark.parametrize("model", MODEL_NAMES)
def test_encoding_matches_tiktoken(model: str) -> None:
    """Our model -> encoding table agrees with tiktoken's own mapping."""
    assert tokens.encoding_name(model) == tiktoken.model.encoding_name_for_model(model)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("openai/gpt-4o", "o200k_base"),
        ("openai/gpt-4-0613", "cl100k_base"),
        ("GPT-4o-2024-08-06", "o200k_base"),
        ("gpt-5.4-pro-2026-01-01", "o200k_base"),
        ("some-future-model", "o200k_base"),
        ("azure/gpt-35-turbo", "cl100k_base"),
    ],
)
def test_encoding_prefixes_and_unknown(model: str, encoding: str) -> None:
    """Provider prefixes and dated snapshots are stripped; unknown models use o200k_base."""
    assert tokens.encoding_name(model) == encoding


def test_special_token_text_is_plain_text() -> None:
    """User text that spells a special token is counted as text, never raised on."""
    assert tokens.count_text("<|endoftext|>", "gpt-4o") > 1


# --- loading: offline, hash-checked, once --------------------------------------------------------

OFFLINE_SCRIPT = textwrap.dedent(
    """
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("network touched")

    socket.socket.connect = socket.socket.connect_ex = refuse
    socket.create_connection = socket.getaddrinfo = refuse

    from labbot.llm import tokens

    assert tokens.count_text("tiktoken is great!", "gpt-4o") == 6
    assert tokens.count_text("tiktoken is great!", "gpt-3.5-turbo") == 6
    assert tokens.count_messages([{"role": "user", "content": "hi"}], "o3") == 8
    assert tokens.estimate_cost("gpt-4o", input_tokens=10, output_tokens=1) is not None
    print("OFFLINE-OK")
    """
)


def run_offline(tmp_path: Path, prefix: list[str]) -> None:
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(cache), "DATA_GYM_CACHE_DIR": str(cache)}
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run(
        [*prefix, sys.executable, "-c", OFFLINE_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.stdout.strip() == "OFFLINE-OK", proc.stderr
    assert list(cache.iterdir()) == []  # nothing fetched, nothing cached


def test_offline_with_sockets_refused(tmp_path: Path) -> None:
    """Counting and pricing work with every socket call raising and an empty tiktoken cache."""
    run_offline(tmp_path, [])


def test_offline_in_network_namespace(tmp_path: Path) -> None:
    """The same, inside a network namespace with no interfaces (unshare -rn) where available."""
    unshare = shutil.which("unshare")
    if unshare is None or subprocess.run([unshare, "-rn", "true"]).returncode != 0:
        pytest.skip("unshare -rn is not available here")
    run_offline(tmp_path, [unshare, "-rn"])


def test_bundled_file_hash_is_checked() -> None:
    """A wrong expected hash is refused instead of loading unverified ranks."""
    with pytest.raises(ValueError, match="sha256"):
        tokens._bundled_ranks("https://x/o200k_base.tiktoken", expected_hash="0" * 64)


def test_encoding_loads_once_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Concurrent first calls share one Encoding object."""
    monkeypatch.setattr(tokens, "_ENCODINGS", {})
    seen: list[object] = []
    barrier = threading.Barrier(6)

    def load() -> None:
        barrier.wait()
        seen.append(tokens.get_encoding("gpt-4"))

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 6 and all(e is seen[0] for e in seen)


# --- image tokens --------------------------------------------------------------------------------


def half_up(value: Decimal) -> int:
    return int(value + Decimal("0.5"))


@pytest.mark.parametrize("case", cases.TILE_EXAMPLES, ids=lambda c: f"{c.width}x{c.height}")
def test_documented_tile_examples(case: cases.TileExample) -> None:
    """The vision guide's gpt-4o examples."""
    got = tokens.image_tokens(case.width, case.height, model=case.model, detail=case.detail)
    assert got == case.tokens


@pytest.mark.parametrize("case", cases.PATCH_EXAMPLES, ids=lambda c: f"{c.width}x{c.height}")
def test_documented_patch_examples(case: cases.PatchExample) -> None:
    """The vision guide's patch counts for the 1536 budget."""
    assert tokens._patches(case.width, case.height, 1536, 2048) == case.patches


def text_overhead(name: str, key: str = "billed") -> int:
    """What a forum measurement billed beyond our image count: the prompt's text."""
    case = cases.FORUM[name]
    image = tokens.image_tokens(
        case["width"], case["height"], model=case["model"], detail=case.get("detail", "high")
    )
    return case[key] - image


def test_forum_resize_rounding() -> None:
    """2049x513 costs 8 tiles and 2050x513 4 tiles on gpt-4.1; the text around them is the same."""
    assert text_overhead("round-up") == text_overhead("round-down")
    assert 0 <= text_overhead("round-up") < 20
    assert tokens.image_tokens(2049, 513, model="gpt-4.1") == 85 + 8 * 170


def test_forum_patch_cap() -> None:
    """4000x1474 on gpt-4.1-mini bills 2488 image tokens: the 2048 cap step and floor/round."""
    assert text_overhead("patch-cap", "image_tokens") == 0


def test_forum_gpt5_low_and_high() -> None:
    """gpt-5 512x513 at low and high: the same text overhead explains both measurements."""
    assert text_overhead("gpt-5-low") == text_overhead("gpt-5-high")
    assert 0 <= text_overhead("gpt-5-low") < 20


TILE_WORKED = [
    pytest.param(c, model, detail, base + (tile * c.tiles if detail == "high" else 0),
                 id=f"{c.width}x{c.height}-{model}-{detail}")
    for c in cases.WORKED
    for family, (base, tile) in cases.TILE_RATES.items()
    for model in family
    for detail in ("high", "low")
]  # fmt: skip
PATCH_WORKED = [
    pytest.param(c, model, half_up(c.patches * Decimal(mult)), id=f"{c.width}x{c.height}-{model}")
    for c in cases.WORKED
    for model, mult in cases.PATCH_MULTIPLIERS.items()
]


@pytest.mark.parametrize(("case", "model", "detail", "want"), TILE_WORKED)
def test_worked_tile_tokens(case: cases.WorkedSize, model: str, detail: str, want: int) -> None:
    """Tile models: every worked size, model and detail (low: the base; high: base + tiles)."""
    assert tokens.image_tokens(case.width, case.height, model=model, detail=detail) == want


@pytest.mark.parametrize("case", cases.WORKED, ids=lambda c: f"{c.width}x{c.height}")
def test_worked_resizes(case: cases.WorkedSize) -> None:
    """Resized sizes, tiles and patch counts of every worked size."""
    w, h = case.width, case.height
    tiled = tokens._tile_size(w, h)
    assert tiled == case.tile_size
    assert (-(-tiled[0] // 512)) * (-(-tiled[1] // 512)) == case.tiles
    patched = tokens._patch_size(w, h, 1536, 2048)
    assert (int(patched[0]), int(patched[1])) == case.patch_size
    assert tokens._patches(w, h) == case.patches


@pytest.mark.parametrize(("case", "model", "want"), PATCH_WORKED)
def test_worked_patch_tokens(case: cases.WorkedSize, model: str, want: int) -> None:
    """Patch models: patches x multiplier, rounded half up (detail auto and high alike)."""
    for detail in ("high", "auto"):
        assert tokens.image_tokens(case.width, case.height, model=model, detail=detail) == want


def test_patch_low_counts_as_high_and_original_only_on_new_models() -> None:
    """Undocumented patch "low" is counted as high; "original" widens only gpt-5.4's budget."""
    high = tokens.image_tokens(4000, 3000, model="o4-mini", detail="high")
    assert tokens.image_tokens(4000, 3000, model="o4-mini", detail="low") == high
    assert tokens.image_tokens(4000, 3000, model="o4-mini", detail="original") == high
    assert tokens.image_tokens(6000, 6000, model="gpt-5.4", detail="high") == 2500
    assert tokens.image_tokens(6000, 6000, model="gpt-5.4", detail="original") == 10000


def test_small_images_are_not_upscaled() -> None:
    """A 128x64 image is one tile (forum measurement) and 8 patches."""
    assert tokens.image_tokens(128, 64, model="gpt-4o", detail="high") == 85 + 170
    assert tokens.image_tokens(128, 64, model="gpt-4.1-mini") == round(8 * 1.62)


def test_image_model_names() -> None:
    """Snapshots and provider prefixes select the same image rule; unknown models cost as gpt-4o."""
    size = (1920, 1080)
    assert tokens.image_tokens(*size, model="openai/gpt-4o-2024-08-06") == 1105
    assert tokens.image_tokens(*size, model="gpt-4.1-mini-2025-04-14") == tokens.image_tokens(
        *size, model="gpt-4.1-mini"
    )
    assert tokens.image_tokens(*size, model="gpt-4o-mini-2024-07-18") == 36835
    assert tokens.image_tokens(*size, model="mystery") == 1105


def test_max_image_tokens() -> None:
    """The worst case is 8 tiles for tile models and the full budget for patch models."""
    assert tokens.max_image_tokens("gpt-4o") == 85 + 8 * 170
    assert tokens.max_image_tokens("gpt-4o", "low") == 85
    assert tokens.max_image_tokens("o4-mini") == round(1536 * 1.72)
    assert tokens.image_tokens(768, 2048, model="gpt-5") == tokens.max_image_tokens("gpt-5")


def test_image_size_must_be_positive() -> None:
    """A zero-size image is a caller error."""
    with pytest.raises(ValueError):
        tokens.image_tokens(0, 10, model="gpt-4o")


# --- image headers -------------------------------------------------------------------------------


SIZES: dict[str, tuple[int, int]] = {
    entry["file"].removeprefix("images/"): tuple(entry["loads"][0]["expect"]["size"])
    for entry in MANIFEST
    if entry["kind"] == "image"
}


def test_manifest_covers_every_image() -> None:
    """Every image fixture has its size in the manifest."""
    assert sorted(SIZES) == sorted(p.name for p in IMAGES.iterdir())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_image_size_of_fixtures(name: str) -> None:
    """image_size on the first 64 KiB of each image fixture is the size it was written with."""
    with open(IMAGES / name, "rb") as f:
        assert tokens.image_size(f.read(65536)) == SIZES[name]


def riff(chunk: bytes, payload: bytes) -> bytes:
    body = b"WEBP" + chunk + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def vp8l(w: int, h: int) -> bytes:
    return b"\x2f" + ((w - 1) | (h - 1) << 14).to_bytes(4, "little") + bytes(8)


SYNTHETIC = {
    "webp-vp8": riff(
        b"VP8 ", b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", 37, 23) + bytes(8)
    ),
    "webp-vp8-scaled": riff(
        b"VP8 ", b"\x00" * 3 + b"\x9d\x01\x2a" + struct.pack("<HH", 37 | 0x4000, 23) + bytes(8)
    ),
    "webp-vp8l": riff(b"VP8L", vp8l(37, 23)),
    "webp-vp8x": riff(
        b"VP8X", b"\x10\0\0\0" + (36).to_bytes(3, "little") + (22).to_bytes(3, "little")
    ),
    "bmp-v3": b"BM" + bytes(12) + struct.pack("<Iii", 40, 37, 23) + bytes(16),
    "bmp-top-down": b"BM" + bytes(12) + struct.pack("<Iii", 124, 37, -23) + bytes(16),
    "bmp-os2": b"BM" + bytes(12) + struct.pack("<IHH", 12, 37, 23) + bytes(4),
    "tiff-be": b"MM\0*" + struct.pack(">IH", 8, 2)
    + struct.pack(">HHIHH", 256, 3, 1, 37, 0) + struct.pack(">HHII", 257, 4, 1, 23),
    "gif87": b"GIF87a" + struct.pack("<HH", 37, 23) + bytes(3),
    "jpeg-progressive": b"\xff\xd8\xff\xe0" + struct.pack(">H", 4) + b"JF"
    + b"\xff\xff\xc2" + struct.pack(">HBHH", 17, 8, 23, 37) + bytes(12),
    "png": b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", 37, 23),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_image_size_synthetic_headers(name: str) -> None:
    """Headers built from the format specs, for variants the fixtures lack (37x23, not square)."""
    assert tokens.image_size(SYNTHETIC[name]) == (37, 23)


@pytest.mark.parametrize(
    "head",
    [b"", b"hello world", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe1\x40\x00", b"RIFF\0\0\0\0WAVE"],
    ids=["empty", "text", "png-cut", "jpeg-cut-in-exif", "riff-wave"],
)
def test_image_size_unknown_or_truncated(head: bytes) -> None:
    """Unknown formats and heads cut before the size give None, never an exception."""
    assert tokens.image_size(head) is None


# --- images inside messages ----------------------------------------------------------------------


def image_message(url: str, **extra: object) -> list[dict]:
    part = {"type": "image_url", "image_url": {"url": url, "detail": "high", **extra}}
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, part]}]


TEXT_ONLY = [{"role": "user", "content": [{"type": "text", "text": "what is this?"}]}]


# Each image with the head step (decoded bytes) that reaches its size: comment.jpg has a 12 KB
# comment before its frame header.
DATA_URL_IMAGES = [("noise.png", 4096), ("photo.jpg", 4096), ("comment.jpg", 65536)]


@pytest.mark.parametrize(("name", "step"), DATA_URL_IMAGES)
def test_data_url_image_is_counted_from_its_header(
    name: str, step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data: URL image costs image_tokens(its size), decoding only a head of the base64 as
    long as the step that reaches the size."""
    data = (IMAGES / name).read_bytes()
    url = f"data:image/{name.rsplit('.', 1)[1]};base64," + base64.b64encode(data).decode()
    decoded: list[int] = []
    real = base64.b64decode
    monkeypatch.setattr(base64, "b64decode", lambda s, *a: decoded.append(len(s)) or real(s, *a))
    got = tokens.count_messages(image_message(url), "gpt-4o")
    want = tokens.count_messages(TEXT_ONLY, "gpt-4o") + tokens.image_tokens(
        *SIZES[name], model="gpt-4o", detail="high"
    )
    assert got == want
    assert max(decoded) <= 4 * -(-step // 3)
    if step == tokens.DATA_URL_HEAD_STEPS[0]:
        assert max(decoded) < len(url) // 2  # the image is more than twice the first step
    else:
        assert max(decoded) > 4 * -(-tokens.DATA_URL_HEAD_STEPS[0] // 3)


def test_http_image_uses_hints_or_worst_case() -> None:
    """An http(s) image is never fetched: size hints are used, else the detail's worst case."""
    url = "https://example.invalid/cat.png"
    text = tokens.count_messages(TEXT_ONLY, "gpt-4.1")
    hinted = tokens.count_messages(image_message(url, width=640, height=427), "gpt-4.1")
    assert hinted - text == tokens.image_tokens(640, 427, model="gpt-4.1", detail="high")
    worst = tokens.count_messages(image_message(url), "gpt-4.1")
    assert worst - text == tokens.max_image_tokens("gpt-4.1", "high") == 85 + 8 * 170


def test_undecodable_data_url_counts_worst_case() -> None:
    """A data: URL that is not an image header falls back to the worst case."""
    text = tokens.count_messages(TEXT_ONLY, "gpt-4o")
    url = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    assert tokens.count_messages(image_message(url), "gpt-4o") - text == 85 + 8 * 170


# --- cost ----------------------------------------------------------------------------------------

PRICE_TABLE = {  # USD with genai-prices PINNED_PRICES: 1,000,000 in (200,000 cached) + 100,000 out
    "gpt-4o": "3.25",
    "gpt-4o-mini": "0.195",
    "gpt-4.1": "2.50",
    "gpt-4.1-mini": "0.50",
    "gpt-5": "2.025",
    "gpt-5-mini": "0.405",
    "o3": "2.50",
    "o4-mini": "1.375",
}
PINNED_PRICES = "0.2.3"


@pytest.fixture
def pinned_prices() -> None:
    """The reference prices hold for the genai-prices table they were read from."""
    version = metadata.version("genai-prices")
    if version != PINNED_PRICES:
        pytest.skip(f"the prices were read from genai-prices {PINNED_PRICES}, not {version}")


@pytest.mark.usefixtures("pinned_prices")
@pytest.mark.parametrize(("model", "usd"), sorted(PRICE_TABLE.items()))
def test_estimate_cost_reference_table(model: str, usd: str) -> None:
    """The reference table, to the cent and beyond."""
    got = tokens.estimate_cost(
        model, input_tokens=1_000_000, cached_tokens=200_000, output_tokens=100_000
    )
    assert got == Decimal(usd)


@pytest.mark.usefixtures("pinned_prices")
def test_estimate_cost_small_examples() -> None:
    """Small examples, including the cookbook messages counted by us."""
    got = tokens.estimate_cost("gpt-4o", input_tokens=1200, cached_tokens=1024, output_tokens=300)
    assert got == Decimal("0.00472")
    prompt = tokens.count_messages(cases.JARGON_MESSAGES, "gpt-4o")
    assert tokens.estimate_cost("openai/gpt-4o", input_tokens=prompt, output_tokens=50) == Decimal(
        "0.00081"
    )


def test_estimate_cost_unknown_or_invalid_is_none() -> None:
    """Unknown models and impossible usage give None instead of raising."""
    assert tokens.estimate_cost("no-such-model", input_tokens=10, output_tokens=10) is None
    assert (
        tokens.estimate_cost("gpt-4o", input_tokens=10, cached_tokens=20, output_tokens=1) is None
    )
