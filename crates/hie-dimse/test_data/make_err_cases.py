"""Writes the hand-made malformed command sets of test_data/err/ (see README.md).

Run from crates/hie-dimse: `python3 test_data/make_err_cases.py`, then
`UPDATE_EXPECT=1 cargo test -p hie-dimse --test golden` and read the diff.
"""
import struct

VERIFICATION = b"1.2.840.10008.1.1"
FIND = b"1.2.840.10008.5.1.4.1.2.2.1"
MOVE = b"1.2.840.10008.5.1.4.1.2.2.2"


def element(element, value):
    return struct.pack("<HHI", 0, element, len(value)) + value


def us(element_, value):
    return element(element_, struct.pack("<H", value))


def ui(element_, uid):
    return element(element_, uid + (b"\0" if len(uid) % 2 else b""))


def command(*elements, group_length=None):
    body = b"".join(elements)
    length = len(body) if group_length is None else group_length
    return element(0x0000, struct.pack("<I", length)) + body


def echo_rq(**kw):
    return command(ui(0x0002, VERIFICATION), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 0x0101), **kw)


cases = {
    "empty": b"",
    "truncated-header": echo_rq()[:-6],
    "lying-length": echo_rq() + struct.pack("<HHI", 0, 0x0902, 0xFFFFFFF0) + b"xx",
    # dcm4che's evil-length bytes (reliability-security.md section 6): not a command group.
    "dcm4che-evil-length": bytes.fromhex("0800000004000000") + b"\0\0\0\0evilleng",
    "out-of-order": command(ui(0x0002, VERIFICATION), us(0x0110, 1), us(0x0100, 0x0030), us(0x0800, 0x0101)),
    "duplicate-element": command(
        ui(0x0002, VERIFICATION), us(0x0100, 0x0030), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 0x0101)
    ),
    "group-length-mismatch": echo_rq(group_length=200),
    "missing-group-length": echo_rq()[12:],
    "missing-message-id": command(ui(0x0002, VERIFICATION), us(0x0100, 0x0030), us(0x0800, 0x0101)),
    "missing-command-field": command(ui(0x0002, VERIFICATION), us(0x0110, 1), us(0x0800, 0x0101)),
    # N-GET-RQ (0110H): an N-service we do not implement.
    "unknown-command-field": command(ui(0x0002, VERIFICATION), us(0x0100, 0x0110), us(0x0110, 1), us(0x0800, 0x0101)),
    "us-with-length-4": command(
        ui(0x0002, VERIFICATION), us(0x0100, 0x0030), element(0x0110, b"\1\0\0\0"), us(0x0800, 0x0101)
    ),
    "uid-with-letters": command(ui(0x0002, b"1.2.abc"), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 0x0101)),
    "uid-too-long": command(ui(0x0002, b"1." * 40), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 0x0101)),
    "c-find-rq-without-data-set": command(
        ui(0x0002, FIND), us(0x0100, 0x0020), us(0x0110, 1), us(0x0700, 0), us(0x0800, 0x0101)
    ),
    "c-echo-rq-with-data-set": command(ui(0x0002, VERIFICATION), us(0x0100, 0x0030), us(0x0110, 1), us(0x0800, 1)),
    "c-move-rq-without-destination": command(
        ui(0x0002, MOVE), us(0x0100, 0x0021), us(0x0110, 1), us(0x0700, 0), us(0x0800, 1)
    ),
    "c-move-rq-destination-too-long": command(
        ui(0x0002, MOVE), us(0x0100, 0x0021), us(0x0110, 1), element(0x0600, b"A" * 18), us(0x0700, 0), us(0x0800, 1)
    ),
    "c-find-rq-bad-priority": command(
        ui(0x0002, FIND), us(0x0100, 0x0020), us(0x0110, 1), us(0x0700, 7), us(0x0800, 1)
    ),
    "c-get-rsp-offending-element-odd-length": command(
        ui(0x0002, FIND), us(0x0100, 0x8010), us(0x0120, 1), us(0x0800, 0x0101), us(0x0900, 0xA900),
        element(0x0901, b"\x10\x00\x20\x00\x00\x00"),
    ),
}

for name, data in cases.items():
    with open(f"test_data/err/{name}.bin", "wb") as out:
        out.write(data)
