"""The sealing key on disk: made once by ``evidence keygen``, ratcheted at every seal.

``keys/seal.key`` (:func:`~agent.evidence.layout.key_path`) holds a
:class:`~agent.evidence.layout.KeyState`: the epoch the next seal carries,
that epoch's key and the last seal's MAC. It is written whole, fsynced and
renamed over the previous one, so an older key never survives beside it.

Order with the log: a seal record is made durable first, the key second.
After a crash in between, the log holds a seal the key file has not caught
up with; :func:`resume_sealer` ratchets forward to it. The other order
could lose a seal for good (a key already past an epoch whose seal is not
in the log shows as an epoch gap).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from pathlib import Path

import msgspec

from agent.evidence.canonical import canonical
from agent.evidence.chain import ZERO_HASH
from agent.evidence.durable import fsync_dir, write_synced
from agent.evidence.layout import SECRET_MODE, KeyState, StoreCorruptError, key_path
from agent.evidence.seal import KEY_SIZE, Seal, Sealer, encode_key, keygen, next_epoch_key
from agent.state_dir import DIR_MODE, ensure_dir, make_state_dir, remove_created

__all__ = ["create_key", "persist_key", "read_key_state", "resume_sealer"]


def create_key(state_dir: Path | str, *, publish: Callable[[str], None] | None = None) -> str:
    """Create the initial sealing key in ``state_dir``; return the verification key text.

    The returned ``thk1-...`` text is the only copy of epoch 0's key once
    the store has sealed once: store it off the host. Refuses
    (:class:`FileExistsError`) if a key already exists, since replacing it
    would orphan the verification key already handed out.

    The state directory and ``keys/`` are made if missing (parents
    0755, as :func:`~agent.state_dir.make_state_dir`). On any failure
    nothing is left behind: no key file, empty or partial, and none of
    the directories made here. ``publish`` is given the verification key
    text once the key is in place; if it raises (the key could not be
    printed), the key is removed again: a sealing key whose
    verification key nobody has is worse than none.

    Raises:
        FileExistsError: there is a key already.
        StateDirError: the state directory cannot be made.
        OSError: the key cannot be written.
    """
    path = key_path(state_dir)
    # No API group known here: a log directory shared with one keeps it.
    created = make_state_dir(state_dir, keep_group=True)
    made_keys = linked = False
    tmp: Path | None = None
    try:
        made_keys = ensure_dir(path.parent, DIR_MODE)
        if os.path.lexists(path):
            raise FileExistsError(f"{path}: a seal key already exists; refusing to replace it")
        initial = keygen()
        state = KeyState(epoch=0, key=initial.hex(), prev_seal=ZERO_HASH)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.new")
        write_synced(tmp, canonical(state) + b"\n", SECRET_MODE, exclusive=True)
        os.link(tmp, path)  # fails if a key appeared meanwhile: never overwrite
        linked = True
        tmp.unlink()
        tmp = None
        fsync_dir(path.parent)
        text = encode_key(initial)
        if publish is not None:
            publish(text)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if linked:
            with contextlib.suppress(OSError):
                path.unlink()
        if made_keys:
            with contextlib.suppress(OSError):
                path.parent.rmdir()
        remove_created(created)
        raise
    return text


def read_key_state(state_dir: Path | str) -> KeyState | None:
    """The key file's state; None if there is no key (the log is chained, not sealed).

    Raises:
        StoreCorruptError: the file is not a key state, or its key is not
            :data:`~agent.evidence.seal.KEY_SIZE` bytes.
        OSError: it cannot be read.
    """
    path = key_path(state_dir)
    if not path.exists():
        return None
    try:
        state = msgspec.json.decode(path.read_bytes(), type=KeyState)
    except msgspec.DecodeError as err:
        raise StoreCorruptError(f"{path}: not a seal key file ({err})") from None
    if len(bytes.fromhex(state.key)) != KEY_SIZE:
        raise StoreCorruptError(f"{path}: not a {KEY_SIZE}-byte key")
    return state


def resume_sealer(state: KeyState, last_seal: Seal | None) -> tuple[Sealer, bool]:
    """The sealer to go on with, from the key file's ``state`` and the log's ``last_seal``.

    Returns the sealer and whether the key file is behind the log (a crash
    came between a seal and its key's persisting): then the caller persists
    the ratcheted key at once, so the older key does not stay on disk.
    Sans-I/O.
    """
    key = bytes.fromhex(state.key)
    epoch, prev_seal = state.epoch, state.prev_seal
    if last_seal is not None and last_seal.epoch >= epoch:
        for _ in range(last_seal.epoch + 1 - epoch):
            key = next_epoch_key(key)
        epoch, prev_seal = last_seal.epoch + 1, last_seal.mac
    return Sealer(key, epoch=epoch, prev_seal=prev_seal), epoch != state.epoch


def persist_key(state_dir: Path | str, sealer: Sealer) -> None:
    """Write ``sealer``'s current epoch, key and last MAC over the key file
    (fsync, rename, fsync the directory): the old key is gone with the rename.

    Raises:
        OSError: it cannot be written; the previous key file stays whole.
    """
    state = KeyState(epoch=sealer.epoch, key=sealer.export_key().hex(), prev_seal=sealer.prev_seal)
    path = key_path(state_dir)
    tmp = path.with_name(path.name + ".new")
    write_synced(tmp, canonical(state) + b"\n", SECRET_MODE)
    os.replace(tmp, path)
    fsync_dir(path.parent)
