"""MDL / NET_BUFFER / NET_BUFFER_LIST model: offset arithmetic across MDL boundaries, zero-copy views,
chain helpers and the error cases NDIS would refuse."""

from __future__ import annotations

import pytest

from chimney.ndis.buffers import (
    NBL_STATUS_UNSET,
    Mdl,
    NblInfo,
    NdisBufferError,
    NetBuffer,
    NetBufferList,
    advance_net_buffer_data_start,
    chain_mdls,
    chain_nbls,
    chain_net_buffers,
    iter_mdls,
    iter_nbl_chain,
    mdls_over,
    nbl_chain_length,
    nbl_chain_tail,
    nbl_from_bytes,
    retreat_net_buffer_data_start,
    split_nbl_chain,
    status_text,
)
from chimney.ndis.status import NdisStatus

PAYLOAD = bytes(range(251)) * 8  # 2008 bytes, period 251 so offsets are distinguishable


def three_mdls() -> tuple[Mdl, Mdl, Mdl]:
    """A 14-byte header MDL, a 0-byte MDL and two payload MDLs of 100 and 50 bytes (total 164)."""
    hdr = Mdl(bytearray(b"H" * 14))
    empty = Mdl(b"")
    a = Mdl(PAYLOAD, 0, 100)
    b = Mdl(PAYLOAD, 100, 50)
    chain_mdls(hdr, empty, a, b)
    return hdr, a, b


# ---------------------------------------------------------------------------------------------- MDL


def test_mdl_describes_a_window_of_the_backing_memory_without_copying() -> None:
    backing = bytearray(b"0123456789")
    m = Mdl(backing, 2, 5)
    assert bytes(m.view()) == b"23456"
    backing[3] = ord("X")  # the view is live memory, not a copy
    assert bytes(m.view()) == b"2X456"
    assert m.byte_count == m.original_byte_count == 5
    assert m.next is None and m.pool is None


def test_mdl_defaults_to_the_rest_of_the_buffer_and_accepts_memoryviews() -> None:
    mv = memoryview(b"abcdef")
    assert bytes(Mdl(mv, 4).view()) == b"ef"
    assert Mdl(mv).buffer.obj is mv.obj


def test_mdl_over_a_non_byte_memoryview_is_cast_to_bytes() -> None:
    import array

    words = array.array("H", [1, 2])
    m = Mdl(memoryview(words))
    assert m.byte_count == 4


@pytest.mark.parametrize(("offset", "count"), [(-1, 2), (0, 11), (8, 3), (11, None), (2, -1)])
def test_mdl_outside_its_backing_buffer_is_refused(offset: int, count: int | None) -> None:
    with pytest.raises(NdisBufferError, match="outside a backing buffer of 10 bytes"):
        Mdl(bytes(10), offset, count)


def test_chain_mdls_links_in_order_and_terminates_the_chain() -> None:
    a, b, c = Mdl(b"a"), Mdl(b"b"), Mdl(b"c")
    c.next = a  # stale link from an earlier chain must be cleared
    assert chain_mdls(a, b, c) is a
    assert list(iter_mdls(a)) == [a, b, c]
    assert c.next is None
    assert chain_mdls() is None
    assert list(iter_mdls(None)) == []


def test_chain_mdls_refuses_a_repeated_mdl() -> None:
    a = Mdl(b"a")
    with pytest.raises(NdisBufferError, match="twice"):
        chain_mdls(a, Mdl(b"b"), a)


def test_mdls_over_splits_every_mdl_size_bytes_over_the_same_memory() -> None:
    data = bytearray(range(10))
    head = mdls_over(data, 4)
    counts = [m.byte_count for m in iter_mdls(head)]
    assert counts == [4, 4, 2]
    assert all(m.buffer.obj is data for m in iter_mdls(head))
    assert mdls_over(b"") is None
    with pytest.raises(NdisBufferError, match="positive"):
        mdls_over(data, 0)


# ----------------------------------------------------------------------------------------------- NB


def test_net_buffer_finds_current_mdl_past_header_and_zero_length_mdls() -> None:
    hdr, a, _b = three_mdls()
    nb = NetBuffer(hdr, 14, 150)
    assert nb.current_mdl is a and nb.current_mdl_offset == 0
    assert nb.total_size() == 164
    assert nb.copy_data() == PAYLOAD[:150]


def test_net_buffer_validates_offset_and_length_against_chain_size() -> None:
    hdr, _a, _b = three_mdls()
    NetBuffer(hdr, 164, 0)  # empty, at the very end: allowed
    with pytest.raises(NdisBufferError, match="exceed the 164 bytes"):
        NetBuffer(hdr, 14, 151)
    with pytest.raises(NdisBufferError, match="negative"):
        NetBuffer(hdr, -1, 3)
    with pytest.raises(NdisBufferError, match="exceed the 0 bytes"):
        NetBuffer(None, 0, 1)


def test_net_buffer_without_mdls_is_an_empty_buffer() -> None:
    nb = NetBuffer()
    assert nb.current_mdl is None and nb.data_length == 0
    assert nb.data_views() == [] and nb.copy_data() == b""
    nb.advance(0)
    with pytest.raises(NdisBufferError, match="no MDL chain"):
        nb.locate(0)
    assert len(nb.protocol_reserved) == 6 and len(nb.miniport_reserved) == 4


def test_advance_into_the_middle_of_the_third_mdl() -> None:
    hdr, _a, b = three_mdls()
    nb = NetBuffer(hdr, 0, 164)
    nb.advance(14 + 100 + 7)  # header, empty MDL, first payload MDL, 7 bytes into the third data MDL
    assert nb.current_mdl is b and nb.current_mdl_offset == 7
    assert nb.data_offset == 121 and nb.data_length == 43
    assert nb.copy_data() == PAYLOAD[107:150]


def test_advance_by_exactly_the_data_length_leaves_an_empty_buffer_at_the_end() -> None:
    hdr, _a, b = three_mdls()
    nb = NetBuffer(hdr, 14, 150)
    advance_net_buffer_data_start(nb, 150)
    assert nb.data_length == 0 and nb.data_offset == 164
    assert nb.current_mdl is b and nb.current_mdl_offset == b.byte_count
    assert nb.data_views() == []
    assert nb.locate(0) == (b, 50)


def test_advance_more_than_the_used_data_is_refused_and_changes_nothing() -> None:
    hdr, a, _b = three_mdls()
    nb = NetBuffer(hdr, 14, 100)
    with pytest.raises(NdisBufferError, match="outside the 100 used bytes"):
        nb.advance(101)
    with pytest.raises(NdisBufferError):
        nb.advance(-1)
    assert (nb.data_offset, nb.data_length, nb.current_mdl, nb.current_mdl_offset) == (14, 100, a, 0)


def test_retreat_back_across_mdl_boundaries_into_the_header() -> None:
    hdr, _a, b = three_mdls()
    nb = NetBuffer(hdr, 0, 164)
    nb.advance(130)
    assert nb.current_mdl is b
    retreat_net_buffer_data_start(nb, 120)  # back over b, a and the empty MDL into the header
    assert nb.current_mdl is hdr and nb.current_mdl_offset == 10
    assert nb.data_offset == 10 and nb.data_length == 154
    assert nb.copy_data() == b"HHHH" + PAYLOAD[:150]


def test_retreat_to_an_mdl_boundary_points_at_the_mdl_that_holds_the_byte() -> None:
    hdr, a, _b = three_mdls()
    nb = NetBuffer(hdr, 20, 10)
    nb.retreat(6)
    assert nb.current_mdl is a and nb.current_mdl_offset == 0


def test_retreat_beyond_the_unused_space_is_refused() -> None:
    hdr, _a, _b = three_mdls()
    nb = NetBuffer(hdr, 14, 10)
    with pytest.raises(NdisBufferError, match="unused space"):
        nb.retreat(15)
    with pytest.raises(NdisBufferError):
        nb.retreat(-2)
    assert nb.data_offset == 14 and nb.data_length == 10


def test_advance_with_free_mdl_unlinks_the_mdls_in_front_of_the_data() -> None:
    hdr, a, b = three_mdls()
    nb = NetBuffer(hdr, 0, 164)
    freed: list[Mdl] = []
    nb.advance(120, freed.append)
    assert freed[0] is hdr and len(freed) == 3  # header, empty MDL, a
    assert nb.mdl_chain is b and nb.current_mdl is b
    assert nb.data_offset == 6 and nb.current_mdl_offset == 6
    assert nb.copy_data() == PAYLOAD[106:150]
    assert a.next is None


def test_data_views_are_one_view_per_mdl_piece_over_caller_memory() -> None:
    hdr, _a, _b = three_mdls()
    nb = NetBuffer(hdr, 10, 120)
    views = nb.data_views()
    assert [len(v) for v in views] == [4, 100, 16]
    assert views[1].obj is PAYLOAD  # no copy
    assert [len(v) for v in nb.data_views(2, 103)] == [2, 100, 1]
    assert b"".join(nb.data_views(104, 16)) == PAYLOAD[100:116]
    with pytest.raises(NdisBufferError, match="outside the 120 used bytes"):
        nb.data_views(100, 21)


def test_data_views_report_a_chain_that_was_shortened_under_the_buffer() -> None:
    hdr, _a, b = three_mdls()
    nb = NetBuffer(hdr, 14, 150)
    b.byte_count = 10  # someone shrank an MDL the NB still covers
    with pytest.raises(NdisBufferError, match="shorter than"):
        nb.data_views()


def test_copy_data_copies_a_subrange() -> None:
    nbl = nbl_from_bytes(PAYLOAD[:300], "host", mdl_size=64)
    nb = nbl.first_net_buffer
    assert nb is not None
    assert nb.copy_data(60, 10) == PAYLOAD[60:70]
    assert isinstance(nb.copy_data(0, 5), bytes)


def test_locate_maps_data_offsets_to_mdl_and_offset_for_sndnxt() -> None:
    """R-OFF-20: the target maps SndNxt/SndMax to a position inside the posted send data."""
    hdr, a, b = three_mdls()
    nb = NetBuffer(hdr, 14, 150)
    assert nb.locate(0) == (a, 0)
    assert nb.locate(99) == (a, 99)
    assert nb.locate(100) == (b, 0)
    assert nb.locate(150) == (b, 50)
    mdl, off = nb.locate(123)
    assert mdl.view()[off] == PAYLOAD[123]
    with pytest.raises(NdisBufferError):
        nb.locate(151)
    with pytest.raises(NdisBufferError):
        nb.locate(-1)


def test_write_fills_a_posted_receive_buffer_across_mdls() -> None:
    backing = bytearray(20)
    nb = NetBuffer(chain_mdls(Mdl(backing, 0, 8), Mdl(backing, 8, 12)), 0, 20)
    nb.write(5, b"abcdef")
    assert bytes(backing[5:11]) == b"abcdef"
    with pytest.raises(NdisBufferError, match="outside"):
        nb.write(18, b"xyz")


def test_write_into_read_only_memory_is_refused() -> None:
    nbl = nbl_from_bytes(b"immutable", "host")
    nb = nbl.first_net_buffer
    assert nb is not None
    with pytest.raises(NdisBufferError, match="read-only"):
        nb.write(0, b"X")


# ---------------------------------------------------------------------------------------------- NBL


def test_new_nbl_has_ndis_shaped_fields_and_an_unset_status() -> None:
    nbl = NetBufferList()
    assert nbl.owner == "NDIS" and nbl.first_net_buffer is None and nbl.next is None
    assert len(nbl.protocol_reserved) == 4 and len(nbl.miniport_reserved) == 2
    assert nbl.context == [] and nbl.info == {} and nbl.flags == 0
    assert nbl.status == NBL_STATUS_UNSET
    assert "status=unset" in repr(nbl)


def test_nbl_serials_are_unique_and_repr_is_short() -> None:
    a = nbl_from_bytes(PAYLOAD[:1460], "host")
    b = nbl_from_bytes(PAYLOAD[:10], "target")
    assert a.serial != b.serial
    a.status = NdisStatus.SUCCESS
    assert repr(a) == f"<NBL#{a.serial} owner=host nb=1 len=1460 status=SUCCESS>"
    b.status = 0x12345678
    assert "status=0x12345678" in repr(b)


def test_nbl_with_several_net_buffers_sums_their_data() -> None:
    nb1 = NetBuffer(Mdl(PAYLOAD, 0, 100), 10, 90)
    nb2 = NetBuffer(Mdl(PAYLOAD, 100, 40), 0, 40)
    nbl = NetBufferList(chain_net_buffers(nb1, nb2), "host")
    assert list(nbl.net_buffers()) == [nb1, nb2]
    assert nbl.data_length() == 130
    assert "nb=2" in repr(nbl)
    with pytest.raises(NdisBufferError, match="twice"):
        chain_net_buffers(nb1, nb1)


def test_nbl_info_uses_ndis_h_slot_numbers() -> None:
    assert NblInfo.TcpIpChecksumNetBufferListInfo == 0
    assert NblInfo.TcpLargeSendNetBufferListInfo == 2
    assert NblInfo.Ieee8021QNetBufferListInfo == 4
    assert NblInfo.NetBufferListFrameType == 7
    assert NblInfo.NetBufferListHashValue == 8
    assert NblInfo.TcpReceiveBytesTransferred == 17


def test_chimney_info_ids_share_their_slot_as_in_ndis_h() -> None:
    nbl = NetBufferList()
    nbl.info[NblInfo.TcpOffloadBytesTransferred] = 1460
    assert nbl.info[NblInfo.TcpIpChecksumNetBufferListInfo] == 1460
    assert NblInfo.TcpReceiveNoPush is NblInfo.TcpLargeSendNetBufferListInfo
    assert NblInfo(0).name == "TcpOffloadBytesTransferred"  # chimney names read well in reports


def test_chain_nbls_round_trips_through_iteration() -> None:
    nbls = [nbl_from_bytes(b"x", "host") for _ in range(4)]
    nbls[3].next = nbls[0]  # stale link must be cut
    head = chain_nbls(nbls)
    assert head is nbls[0]
    assert list(iter_nbl_chain(head)) == nbls
    assert nbl_chain_length(head) == 4
    assert nbl_chain_tail(head) is nbls[3] and nbls[3].next is None
    assert chain_nbls([]) is None and nbl_chain_length(None) == 0 and nbl_chain_tail(None) is None


def test_chain_nbls_refuses_a_repeated_nbl() -> None:
    a, b = nbl_from_bytes(b"a", "host"), nbl_from_bytes(b"b", "host")
    with pytest.raises(NdisBufferError, match="twice"):
        chain_nbls([a, b, a])


def test_split_nbl_chain_cuts_every_link() -> None:
    nbls = [nbl_from_bytes(b"x", "host") for _ in range(3)]
    assert split_nbl_chain(chain_nbls(nbls)) == nbls
    assert all(n.next is None for n in nbls)


def test_nbl_from_bytes_keeps_a_header_as_unused_space_without_copying() -> None:
    frame = bytearray(PAYLOAD[:54])
    nbl = nbl_from_bytes(frame, "miniport", mdl_size=20, data_offset=14)
    nb = nbl.first_net_buffer
    assert nb is not None and nbl.owner == "miniport"
    assert (nb.data_offset, nb.data_length) == (14, 40)
    assert [m.byte_count for m in nb.mdls()] == [20, 20, 14]
    frame[14] = 0xEE
    assert nb.copy_data(0, 1) == b"\xee"
    nb.retreat(14)
    assert nb.copy_data(0, 14) == bytes(frame[:14])
    with pytest.raises(NdisBufferError, match="data_offset 55"):
        nbl_from_bytes(frame, "miniport", data_offset=55)


def test_status_text_names_known_codes() -> None:
    assert status_text(NdisStatus.PENDING) == "PENDING"
    assert status_text(NBL_STATUS_UNSET) == "unset"


def test_write_spanning_writable_and_read_only_memory_writes_nothing() -> None:
    writable = bytearray(4)
    nb = NetBuffer(chain_mdls(Mdl(writable), Mdl(b"ro")), 0, 6)
    with pytest.raises(NdisBufferError, match="read-only"):
        nb.write(0, b"abcdef")
    assert writable == bytearray(4)


def test_adjust_mdl_length_stays_inside_the_backing_buffer() -> None:
    m = Mdl(bytearray(10), 4, 2)
    m.adjust_length(6)
    assert m.byte_count == 6 and m.original_byte_count == 2
    with pytest.raises(NdisBufferError, match="outside a backing buffer of 10 bytes"):
        m.adjust_length(7)
    with pytest.raises(NdisBufferError):
        m.adjust_length(-1)
