"""User code against the typed host->kernel request and the one store listing per cell, on the
real sandbox and the real file store: limits rewritten inside the kernel for the next cell are
still the host's; a file named like a checkpoint piece stays a file."""

from __future__ import annotations

import time

from labbot.sandbox.checkpoints import conversation_tag, piece_name
from tests.conftest import Factory, chunks_of

# Every later request the kernel reads carries limits a thousand times the host's, and a
# checkpoint room of a terabyte: what user code sharing the kernel's process can do.
TAMPER = (
    "import dataclasses, protocol\n"
    "def _lift(read, replace, CellLimits):\n"
    "    def lifted(message):\n"
    "        request = read(message)\n"
    "        big = CellLimits(cpu_seconds=1e9, output_head=10**9, output_tail=10**9,"
    " max_file_bytes=10**12, max_output_files=10**6, output_files_bytes=10**13)\n"
    "        order = request.checkpoint\n"
    "        if order is not None:\n"
    "            order = replace(order, cap=10**12)\n"
    "        return replace(request, limits=big, checkpoint=order)\n"
    "    return lifted\n"
    "protocol.ExecuteRequest.from_message = _lift(\n"
    "    protocol.ExecuteRequest.from_message, dataclasses.replace, protocol.CellLimits)\n"
    "del _lift\n"
)


async def test_limits_lifted_inside_the_kernel_are_still_the_hosts(
    make_interpreter: Factory,
) -> None:
    """After user code rewrites the request its kernel reads, the next cell's files, live
    output, checkpoint pieces and CPU are held to the host's limits all the same: too many
    files or too much output ends the session (nothing over the limits reaches the store or
    the user), a piece over the room is not kept, an endless loop ends at the time limit."""
    async with make_interpreter(
        CODE_EXECUTION_TIMEOUT=5, SESSION_CHECKPOINT_MB=1, SANDBOX_MAX_OUTPUT_FILES=5
    ) as (interpreter, store):
        limits = interpreter.limits
        seen: list[str] = []

        async def on_output(name: str, text: str) -> None:
            seen.append(text)

        assert (await interpreter.run("u", "c", TAMPER)).status == "ok"
        files = await interpreter.run(
            "u", "c", "for i in range(40):\n    open(f'f{i}.txt', 'w').write('x')"
        )
        assert files.status == "killed" and "sent something it must not" in files.error.message
        assert len(await store.list("u")) <= limits.max_output_files

        assert (await interpreter.run("u", "c", TAMPER)).status == "ok"
        flood = await interpreter.run(
            "u", "c", f"print('y' * {4 * limits.output_head})", on_output=on_output
        )
        assert flood.status == "killed", flood
        assert sum(map(len, seen)) <= limits.output_head

        assert (await interpreter.run("u", "c", TAMPER)).status == "ok"
        piece = await interpreter.run("u", "c", "big = bytes(3 * 2**20)\nsmall = 1")
        assert piece.status == "ok", piece
        assert any("could not keep big" in note for note in piece.notes), piece.notes
        prefix = conversation_tag("c") + "."
        kept = [r for r in await store.records("u") if r.name.startswith(prefix)]
        assert "big" not in {r.name[len(prefix) : -len(".ckpt")] for r in kept}
        assert sum(r.size for r in kept) <= 2**20

        assert (await interpreter.run("u", "c", TAMPER)).status == "ok"
        started = time.monotonic()
        spin = await interpreter.run("u", "c", "while True:\n    pass")
        assert spin.status == "timeout", spin
        assert time.monotonic() - started < 60
        assert (await interpreter.run("u", "c", "1 + 1")).value == "2"


async def test_a_file_named_like_a_checkpoint_piece_stays_a_file(jailed) -> None:
    """An upload, and a file the code writes, named ``<tag>.<variable>.ckpt`` for the very
    conversation: both listed as the user's files, neither counted as a piece, restored into
    a fresh session, nor deleted by /reset."""
    interpreter, store = jailed
    forged = piece_name("c", "planted")
    uploaded = await store.save("u", forged, chunks_of(b"not a pickle"))
    written = await interpreter.run(
        "u", "c", f"open({piece_name('c', 'written')!r}, 'wb').write(b'x')\nkeep = 7"
    )
    assert written.status == "ok", written
    assert [f.name for f in written.files] == [piece_name("c", "written")]
    held = await interpreter.files.pieces.held("u", "c")
    assert set(held) == {"keep"}
    await interpreter.sessions.sessions[("u", "c")].kernel.kill()
    after = await interpreter.run("u", "c", "sorted(k for k in globals() if not k.startswith('_'))")
    assert after.status == "ok", after
    assert "planted" not in after.value and "written" not in after.value and "keep" in after.value
    await interpreter.reset("u", "c")
    names = sorted(r.name for r in await store.list("u"))
    assert names == sorted([forged, piece_name("c", "written")])
    assert (await store.get("u", uploaded.record.id)).name == forged
    assert await interpreter.files.pieces.held("u", "c") == {}
