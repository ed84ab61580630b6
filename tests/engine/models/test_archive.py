"""Safe extraction of uploaded archives: every refusal has a crafted archive."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from fpf_client.errors import InvalidModel
from workers.engine.models.archive import archive_kind, extract_archive, list_members


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            archive.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def _link(name: str, kind: bytes, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


def _zip(path: Path, members: dict[str, bytes], *, symlink: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data, compress_type=zipfile.ZIP_DEFLATED)
        if symlink is not None:
            info = zipfile.ZipInfo(symlink)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            archive.writestr(info, "/etc/passwd")
    return path


def test_extracts_nested_tar_gz_and_zip(tmp_path: Path) -> None:
    d = tarfile.TarInfo("model/variables")
    d.type = tarfile.DIRTYPE
    tgz = _tar(
        tmp_path / "m.tar.gz",
        [(d, None), (_file("model/saved_model.pb"), b"pb"), (_file("model/variables/v.index"), b"ix")],
    )
    out = extract_archive(tgz, tmp_path / "a")
    assert (out / "model/saved_model.pb").read_bytes() == b"pb"
    assert (out / "model/variables/v.index").read_bytes() == b"ix"
    assert archive_kind(tgz) == "tar"
    assert sorted(list_members(tgz)) == ["model/saved_model.pb", "model/variables/v.index"]

    zp = _zip(tmp_path / "m.zip", {"m/saved_model.pb": b"pb", "m/variables/v.index": b"ix"})
    out = extract_archive(zp, tmp_path / "b")
    assert (out / "m/variables/v.index").read_bytes() == b"ix"
    assert archive_kind(zp) == "zip"


def test_not_an_archive(tmp_path: Path) -> None:
    plain = tmp_path / "plain.onnx"
    plain.write_bytes(b"\x08\x07" + b"x" * 100)
    assert archive_kind(plain) is None
    with pytest.raises(InvalidModel, match="not a zip or tar"):
        extract_archive(plain, tmp_path / "out")


@pytest.mark.parametrize(
    "member, reason",
    [
        (_file("/etc/evil"), "absolute path"),
        (_file("../evil"), r"\.\."),
        (_file("ok/../../evil"), r"\.\."),
        (_file("C:\\evil"), "absolute path"),
        (_link("model/link", tarfile.SYMTYPE, "/etc/passwd"), "link"),
        (_link("model/hard", tarfile.LNKTYPE, "/etc/passwd"), "link"),
        (_link("model/fifo", tarfile.FIFOTYPE, ""), "not a regular file"),
        (_link("model/dev", tarfile.CHRTYPE, ""), "not a regular file"),
    ],
)
def test_tar_refusals(tmp_path: Path, member: tarfile.TarInfo, reason: str) -> None:
    data = b"x" if member.type == tarfile.REGTYPE else None
    tgz = _tar(tmp_path / "bad.tar.gz", [(_file("model/saved_model.pb"), b"pb"), (member, data)])
    dest = tmp_path / "out"
    with pytest.raises(InvalidModel, match=reason):
        extract_archive(tgz, dest)
    assert not dest.exists(), "a refused archive leaves nothing behind"
    assert not (tmp_path / "evil").exists()


@pytest.mark.parametrize("name, reason", [("/abs/evil", "absolute path"), ("../evil", r"\.\.")])
def test_zip_path_refusals(tmp_path: Path, name: str, reason: str) -> None:
    with pytest.raises(InvalidModel, match=reason):
        extract_archive(_zip(tmp_path / "bad.zip", {name: b"x"}), tmp_path / "out")


def test_zip_symlink_refused(tmp_path: Path) -> None:
    zp = _zip(tmp_path / "bad.zip", {"m/saved_model.pb": b"pb"}, symlink="m/variables")
    with pytest.raises(InvalidModel, match="symbolic link"):
        extract_archive(zp, tmp_path / "out")


def test_duplicate_member_refused(tmp_path: Path) -> None:
    tgz = _tar(tmp_path / "dup.tar.gz", [(_file("a/x"), b"1"), (_file("a/./x"), b"2")])
    with pytest.raises(InvalidModel, match="twice"):
        extract_archive(tgz, tmp_path / "out")


def test_compression_bombs_refused(tmp_path: Path) -> None:
    zeros = bytes(8 << 20)
    tgz = _tar(tmp_path / "bomb.tar.gz", [(_file("m/saved_model.pb"), zeros)])
    assert tgz.stat().st_size * 200 < len(zeros)
    with pytest.raises(InvalidModel, match="compression bomb"):
        extract_archive(tgz, tmp_path / "a")
    zp = _zip(tmp_path / "bomb.zip", {"m/saved_model.pb": zeros})
    with pytest.raises(InvalidModel, match="compression bomb"):
        extract_archive(zp, tmp_path / "b")
    # The same archive passes with a looser ratio: the limit, not the content, refused it.
    extract_archive(zp, tmp_path / "c", max_ratio=1e6)


def test_member_count_and_size_limits(tmp_path: Path) -> None:
    tgz = _tar(tmp_path / "many.tar.gz", [(_file(f"m/{i}"), b"x") for i in range(20)])
    with pytest.raises(InvalidModel, match="more than 10 members"):
        extract_archive(tgz, tmp_path / "a", max_members=10)
    with pytest.raises(InvalidModel, match="more than 5 bytes"):
        extract_archive(tgz, tmp_path / "b", max_total_bytes=5)
