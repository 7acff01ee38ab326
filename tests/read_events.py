#!/usr/bin/python3
"""An independent reader of TensorBoard event files, for the test of dshost's writer: TFRecord
framing checked with its own CRC-32C, records decoded by Debian's python3-protobuf with
TensorFlow's Event / Summary / SessionLog message definitions (the fields TensorBoard reads).
Prints JSON: {"file_version", "scalars": [[step, tag, value], ...], "restarts": [step, ...]}.

    tests/read_events.py EVENT_FILE
"""
import json
import struct
import sys

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

F = descriptor_pb2.FieldDescriptorProto


def messages():
    proto = descriptor_pb2.FileDescriptorProto(name="event.proto", package="tensorboard")

    def message(name, fields):
        m = proto.message_type.add(name=name)
        for number, (field, kind, extra) in enumerate(fields):
            f = m.field.add(name=field, number=extra.get("number", number + 1), type=kind,
                            label=extra.get("label", F.LABEL_OPTIONAL))
            if "type_name" in extra:
                f.type_name = extra["type_name"]
        return m

    message("Value", [("tag", F.TYPE_STRING, {}), ("simple_value", F.TYPE_FLOAT, {})])
    message("Summary", [("value", F.TYPE_MESSAGE,
                         {"type_name": ".tensorboard.Value", "label": F.LABEL_REPEATED})])
    message("SessionLog", [("status", F.TYPE_INT32, {})])
    message("Event", [("wall_time", F.TYPE_DOUBLE, {}), ("step", F.TYPE_INT64, {}),
                      ("file_version", F.TYPE_STRING, {}),
                      ("summary", F.TYPE_MESSAGE, {"type_name": ".tensorboard.Summary", "number": 5}),
                      ("session_log", F.TYPE_MESSAGE,
                       {"type_name": ".tensorboard.SessionLog", "number": 6})])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.MessageFactory(pool).GetPrototype(pool.FindMessageTypeByName("tensorboard.Event"))


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def main(path):
    Event = messages()
    data = open(path, "rb").read()
    out = {"file_version": None, "scalars": [], "restarts": []}
    at = 0
    while at < len(data):
        (length,) = struct.unpack_from("<Q", data, at)
        (length_crc,) = struct.unpack_from("<I", data, at + 8)
        record = data[at + 12:at + 12 + length]
        (record_crc,) = struct.unpack_from("<I", data, at + 12 + length)
        assert length_crc == masked(data[at:at + 8]), f"bad length CRC at byte {at}"
        assert record_crc == masked(record), f"bad record CRC at byte {at}"
        at += 12 + length + 4
        event = Event.FromString(record)
        if event.file_version:
            out["file_version"] = event.file_version
        if event.HasField("session_log"):
            out["restarts"].append(event.step)
        for value in event.summary.value:
            out["scalars"].append([event.step, value.tag, value.simple_value])
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
