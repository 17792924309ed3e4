"""Baseline (b) of the ADT bench (tests/benches/adt.rs): a plain Python MLLP server.

It does what a straightforward python-hl7 receiver with a durable ACK does: asyncio MLLP server
(`hl7.mllp.start_hl7_server`), parse each message with python-hl7, insert it into SQLite (WAL,
synchronous=FULL, one connection), commit, and only then answer `msg.create_ack()`. One fsync per
message, no group commit: that is the point of comparison.

Usage: python python_mllp_server.py PORT DB_PATH
Prints "READY <port>" on stdout once it listens; runs until killed.
"""

import asyncio
import sqlite3
import sys

import hl7
import hl7.mllp


def open_db(path):
    # isolation_level=None: we issue BEGIN/COMMIT ourselves, one transaction per message.
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE IF NOT EXISTS inbound ("
        " id INTEGER PRIMARY KEY,"
        " control_id TEXT NOT NULL,"
        " event TEXT NOT NULL,"
        " patient_id TEXT NOT NULL,"
        " message TEXT NOT NULL)"
    )
    return db


async def main(port, db_path):
    db = open_db(db_path)

    async def on_client(reader, writer):
        try:
            while not reader.at_eof():
                msg = await reader.readmessage()
                control_id = str(msg.segment("MSH")[10])
                event = str(msg.segment("MSH")[9])
                patient_id = str(msg.segment("PID")[3])
                # The commit (fsync of the WAL) happens before the ACK is written.
                db.execute("BEGIN")
                db.execute(
                    "INSERT INTO inbound (control_id, event, patient_id, message) VALUES (?, ?, ?, ?)",
                    (control_id, event, patient_id, str(msg)),
                )
                db.execute("COMMIT")
                writer.writemessage(msg.create_ack())
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await hl7.mllp.start_hl7_server(on_client, host="127.0.0.1", port=port)
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2]))
