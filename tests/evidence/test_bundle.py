"""Deterministic export bundles and their verification, including damaged bundles."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import blake3
import pytest

from agent.evidence.bundle import BundleError, BundleManifest, export_bundle
from agent.evidence.keys import create_key
from agent.evidence.seal import decode_key
from agent.evidence.store import EvidenceStore
from agent.evidence.verify import verify_bundle, verify_store


def export(state: Path, out: Path, **kw: int) -> BundleManifest:
    with open(out, "wb") as f:
        return export_bundle(state, f, **kw)


class Clock:
    def __call__(self) -> int:
        return 1_700_000_000 * 10**9


def open_store(state: Path) -> EvidenceStore:
    return EvidenceStore(
        state,
        segment_max_bytes=2500,
        segment_max_age_s=3600,
        retain_max_bytes=10**9,
        checkpoint_every_records=5,
        seal_interval_s=3600,
        clock=Clock(),
    )


@pytest.fixture
def sealed_log(tmp_path: Path) -> tuple[bytes, Path]:
    state = tmp_path / "state"
    key = decode_key(create_key(state))
    with open_store(state) as store:
        for i in range(50):
            store.append("note", {"n": i})
        store.commit()
    return key, state


def test_export_twice_gives_identical_bytes(sealed_log: tuple[bytes, Path], tmp_path: Path) -> None:
    _, state = sealed_log
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    manifest = export(state, a)
    export(state, b)
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names) and names[0] == "manifest.json"
    assert all((m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "") for m in members)
    assert [m.path for m in manifest.members] == names[1:]
    assert manifest.checkpoints and manifest.first_seq == 0


def test_same_range_is_identical_after_the_log_grows(
    sealed_log: tuple[bytes, Path], tmp_path: Path
) -> None:
    key, state = sealed_log
    first = tmp_path / "first.tar"
    manifest = export(state, first, from_seq=20, to_seq=40)
    with open_store(state) as store:
        for i in range(30):
            store.append("note", {"n": 100 + i})
    second = tmp_path / "second.tar"
    export(state, second, from_seq=20, to_seq=40)
    assert first.read_bytes() == second.read_bytes()
    assert manifest.last_seq == 40 and manifest.first_seq <= 20
    report = verify_bundle(second, key=key)
    assert report.ok, report.summary()
    assert report.head == manifest.head and report.history_from == manifest.first_seq


def test_verify_good_bundle(sealed_log: tuple[bytes, Path], tmp_path: Path) -> None:
    key, state = sealed_log
    out = tmp_path / "b.tar"
    manifest = export(state, out)
    report = verify_bundle(out, key=key, expect_head=manifest.head)
    assert report.ok and report.seals_checked and report.seals == len(manifest.checkpoints)
    assert verify_store(out, key=key).ok  # dispatched by the tar header
    assert not verify_bundle(out).seals_checked


def test_bundle_with_wrong_key_reports_a_seal_failure(
    sealed_log: tuple[bytes, Path], tmp_path: Path
) -> None:
    _, state = sealed_log
    out = tmp_path / "b.tar"
    export(state, out)
    report = verify_bundle(out, key=bytes(32))
    assert not report.ok and report.first_break is not None
    assert report.first_break.kind == "checkpoint" and "mac" in report.first_break.reason


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9, 0.999])
def test_truncated_bundle_is_a_clear_error(
    sealed_log: tuple[bytes, Path], tmp_path: Path, keep: float
) -> None:
    _, state = sealed_log
    out = tmp_path / "b.tar"
    export(state, out)
    data = out.read_bytes()
    manifest_end = 1024  # past the manifest's header block
    cut = max(int(len(data) * keep), manifest_end)
    # Cut inside the members, not in tar's trailing zero padding.
    payload_end = data.rstrip(b"\0")
    cut = min(cut, len(payload_end) - 10)
    out.write_bytes(data[:cut])
    with pytest.raises(BundleError) as err:
        verify_bundle(out)
    assert "\n" not in str(err.value) and str(out) in str(err.value)


def test_empty_or_non_tar_bundle(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar"
    bogus.write_bytes(b"")
    with pytest.raises(BundleError, match="not a bundle"):
        verify_bundle(bogus)
    bogus.write_bytes(b"hello, not a tar\n" * 100)
    with pytest.raises(BundleError):
        verify_bundle(bogus)


def _rewrite_member(path: Path, name: str, change: bytes, to: bytes) -> None:
    with tarfile.open(path) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in items:
            if member.name == name:
                data = data.replace(change, to, 1)
                member.size = len(data)
            tar.addfile(member, io.BytesIO(data))


def test_altered_member_names_the_member(sealed_log: tuple[bytes, Path], tmp_path: Path) -> None:
    _, state = sealed_log
    out = tmp_path / "b.tar"
    manifest = export(state, out)
    victim = manifest.members[1].path
    _rewrite_member(out, victim, b'{"n":', b'{"n" :')
    with pytest.raises(BundleError, match=victim) as err:
        verify_bundle(out)
    assert err.value.member == victim


def test_altered_manifest_is_a_clear_error(sealed_log: tuple[bytes, Path], tmp_path: Path) -> None:
    _, state = sealed_log
    out = tmp_path / "b.tar"
    export(state, out)
    _rewrite_member(out, "manifest.json", b'"format"', b'"fromat"')
    with pytest.raises(BundleError, match="manifest"):
        verify_bundle(out)


def test_records_altered_with_manifest_rehashed_are_caught(
    sealed_log: tuple[bytes, Path], tmp_path: Path
) -> None:
    """Whoever rewrites a member can rewrite the manifest: the chain is what counts."""
    _, state = sealed_log
    segment = sorted((state / "segments").iterdir())[1]
    data = segment.read_bytes()
    assert b'"body":{"n":' in data
    segment.write_bytes(data.replace(b'"body":{"n":', b'"body":{"n":9', 1))
    out = tmp_path / "b.tar"
    export(state, out)
    report = verify_bundle(out)
    assert not report.ok and report.first_break is not None
    assert report.first_break.seq is not None and report.first_break.kind == "hash"


def test_export_range_errors_write_nothing(sealed_log: tuple[bytes, Path]) -> None:
    _, state = sealed_log
    out = io.BytesIO()
    with pytest.raises(BundleError, match="past the log's head"):
        export_bundle(state, out, to_seq=10_000)
    with pytest.raises(BundleError, match="after"):
        export_bundle(state, out, from_seq=9, to_seq=3)
    with pytest.raises(BundleError, match="no records"):
        export_bundle(state, out, from_seq=10_000)
    assert out.getvalue() == b""


@pytest.mark.parametrize(("from_seq", "to_seq"), [(None, None), (0, 0), (20, 40), (45, None)])
def test_bundle_bytes_are_what_tarfile_writes(
    sealed_log: tuple[bytes, Path], from_seq: int | None, to_seq: int | None
) -> None:
    """The bundle is written without seeking (a FIFO can take it), and its
    bytes are those ``tarfile`` wrote for it before: the members read back
    and archived again by tarfile, with the bundle's fields, are the same."""
    _, state = sealed_log
    out = io.BytesIO()
    export_bundle(state, out, from_seq=from_seq, to_seq=to_seq)
    data = out.getvalue()
    assert len(data) % tarfile.RECORDSIZE == 0
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    again = io.BytesIO()
    with tarfile.open(fileobj=again, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, body in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(body), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(body))
    assert len(members) >= 2 and data == again.getvalue()


# --- names and foreign text in messages ----------------------------------------
# Whoever made the bundle chose its member names, its manifest's paths and
# keys; verify prints the messages that quote them. A name holding a newline
# and an escape sequence must not print a fake verdict line or reach the
# terminal raw.

FORGED = "evil\nOK: 5 records, head 4:abcd  (SEQ:HASH, for --expect-head)\x1b[31m"


def members_of(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar.getmembers()]  # type: ignore[union-attr]


def write_tar(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)


def member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def edit_manifest(items: list[tuple[tarfile.TarInfo, bytes]], edit: Any) -> None:
    for index, (info, data) in enumerate(items):
        if info.name == "manifest.json":
            manifest = json.loads(data)
            edit(manifest)
            items[index] = (info, json.dumps(manifest).encode())


def assert_safe(text: str) -> None:
    """One line, nothing a terminal acts on, and the forged name only escaped."""
    assert text.isprintable(), repr(text)
    assert "\x1b" not in text and "\n" not in text


def bundle_error(path: Path) -> BundleError:
    with pytest.raises(BundleError) as err:
        verify_bundle(path)
    assert_safe(str(err.value))
    return err.value


@pytest.fixture
def bundle(sealed_log: tuple[bytes, Path], tmp_path: Path) -> Path:
    _, state = sealed_log
    out = tmp_path / "b.tar"
    export(state, out)
    return out


def test_an_extra_member_with_a_forged_name_is_named_escaped(bundle: Path) -> None:
    items = members_of(bundle)
    write_tar(bundle, [*items, member(FORGED, b"x")])
    err = bundle_error(bundle)
    assert err.member == FORGED  # for a program: the name as it is
    assert f"member {FORGED!r} is not listed in the manifest" in str(err)


def test_an_unknown_manifest_key_does_not_reach_the_message_raw(bundle: Path) -> None:
    """msgspec's 'unknown field' error quotes the key as it is."""
    items = members_of(bundle)
    edit_manifest(items, lambda m: m.update({"x\nOK: forged\x1b[2J": 1}))
    write_tar(bundle, items)
    assert "is not a valid manifest" in str(bundle_error(bundle))


@pytest.mark.parametrize("field", ["path", "format"])
def test_forged_manifest_values_are_escaped(bundle: Path, field: str) -> None:
    items = members_of(bundle)
    if field == "path":
        edit_manifest(items, lambda m: m["members"].append({**m["members"][0], "path": FORGED}))
        expected = f"member {FORGED!r} is missing"
    else:
        edit_manifest(items, lambda m: m.update(format=FORGED))
        expected = f"unknown bundle format {FORGED!r}"
    write_tar(bundle, items)
    assert expected in str(bundle_error(bundle))


def test_a_forged_name_that_is_not_a_regular_file_is_escaped(bundle: Path) -> None:
    link = tarfile.TarInfo(FORGED)
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    write_tar(bundle, [*members_of(bundle), (link, b"")])
    assert f"member {FORGED!r} is not a regular file" in str(bundle_error(bundle))


def test_a_bundle_cut_inside_a_forged_member_is_escaped(bundle: Path) -> None:
    write_tar(bundle, [*members_of(bundle), member(FORGED, b"x" * 5000)])
    data = bundle.read_bytes()
    bundle.write_bytes(data[: len(data.rstrip(b"\0")) - 4000])
    err = bundle_error(bundle)
    assert err.member == FORGED and "truncated or not a bundle" in str(err)


def test_a_break_in_a_member_with_a_forged_name_reports_it_escaped(bundle: Path) -> None:
    """The manifest lists the renamed members with their hashes (it is not
    protected), so the records are verified: the break's ``where`` names
    the member, escaped, and no line of the summary is a fake verdict."""
    items = members_of(bundle)
    renamed: list[tuple[tarfile.TarInfo, bytes]] = []
    new_paths: dict[str, str] = {}
    for info, data in items:
        if info.name.startswith("segments/"):
            new_paths[info.name] = f"{FORGED}/{info.name.removeprefix('segments/')}"
            if len(new_paths) == 1:  # the first segment: a note altered
                data = data.replace(b'"body":{"n":', b'"body":{"n":9', 1)
            renamed.append((tarfile.TarInfo(new_paths[info.name]), data))
        else:
            renamed.append((info, data))
    hashes = {i.name: blake3.blake3(d).hexdigest() for i, d in renamed}
    sizes = {i.name: len(d) for i, d in renamed}

    def rename(manifest: dict[str, Any]) -> None:
        for entry in manifest["members"]:
            entry["path"] = new_paths[entry["path"]]
            entry["blake3"] = hashes[entry["path"]]
            entry["size"] = sizes[entry["path"]]

    edit_manifest(renamed, rename)
    write_tar(bundle, renamed)
    report = verify_bundle(bundle)
    assert not report.ok and report.first_break is not None and report.where is not None
    first = min(new_paths.values())
    assert report.where == f"{first!r} line 2", report.where
    lines = report.summary().split("\n")
    assert lines[0].startswith("BROKEN at seq ")
    for line in lines:
        assert_safe(line)
        assert not line.startswith("OK:")
