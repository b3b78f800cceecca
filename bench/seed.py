"""Bulk-load a PostgreSQL template database with 1,000,000 callbacks, 1,000,000 dismissals and
3,000,000 member rows, in SQL (INSERT … SELECT generate_series), then copy it per benchmark with
`CREATE DATABASE … TEMPLATE` (a file copy: seconds, not minutes).

The rows look like production: ULID-shaped ids older than anything the benchmark creates, IM-style
distinct group IDs (5 % of groups dismissed twice), real sha256 dedupe keys, a ~300-byte raw body,
3 members per group drawn from 200,000 accounts (≈15 dismissals per account), and a status mix of
90 % confirmed by callback, 5 % external, 3 % failed, 2 % unconfirmed.
"""

from __future__ import annotations

import time

from bench.common import create_db, db_exists, log, migrate, pg_url, psql

SEED_VERSION = 2  # 2: built at the schema's second revision (group_members.callback_id unconstrained)
TEMPLATE = f"bench_seed_1m_v{SEED_VERSION}"

_SQL = """
SET synchronous_commit = off;
SET maintenance_work_mem = '256MB';
CREATE TEMP TABLE seed AS
SELECT i,
       '00' || lpad(i::text, 24, '0') AS id,
       '@TGS#2B' || upper(lpad(to_hex(CASE WHEN i % 20 = 0 THEN i - 1 ELSE i END), 8, '0')) AS gid,
       timestamptz '2026-08-01 00:00:00+00' + (i * interval '7.7 seconds') AS ev
FROM generate_series(1::bigint, {n}::bigint) AS i;

INSERT INTO callbacks (id, state, dedupe_key, sdkappid, command, group_id, group_type, owner_account, name,
                       member_count, event_time, client_ip, opt_platform, request_time, query_string,
                       content_type, remote_addr, raw_body, received_at, duplicates)
SELECT id, 'accepted',
       encode(sha256(convert_to('1400000000|Group.CallbackAfterGroupDestroyed|' || gid || '|t:'
              || (extract(epoch FROM ev) * 1000)::bigint, 'UTF8')), 'hex'),
       1400000000, 'Group.CallbackAfterGroupDestroyed', gid, 'Public', 'owner' || (i % 50000),
       'group ' || i, 3, ev, '10.0.' || (i % 250) || '.' || (i % 200), 'RESTAPI', extract(epoch FROM ev)::bigint,
       'SdkAppid=1400000000&CallbackCommand=Group.CallbackAfterGroupDestroyed&contenttype=json&ClientIP=10.0.0.1'
         || '&OptPlatform=RESTAPI&RequestTime=' || extract(epoch FROM ev)::bigint,
       'application/json', '127.0.0.1',
       convert_to(json_build_object(
           'CallbackCommand', 'Group.CallbackAfterGroupDestroyed', 'GroupId', gid, 'Type', 'Public',
           'Owner_Account', 'owner' || (i % 50000), 'Name', 'group ' || i,
           'MemberList', json_build_array(
               json_build_object('Member_Account', 'user' || ((i * 3) * 7919 % 200000)),
               json_build_object('Member_Account', 'user' || ((i * 3 + 1) * 7919 % 200000)),
               json_build_object('Member_Account', 'user' || ((i * 3 + 2) * 7919 % 200000))),
           'EventTime', (extract(epoch FROM ev) * 1000)::bigint)::text, 'UTF8'),
       ev + interval '80 milliseconds', 0
FROM seed;

INSERT INTO dismissals (id, group_id, sdkappid, source, status, confirmation, reason, requested_by, requested_at,
                        sent_at, confirmed_at, attempts, last_error_code, last_error_info, callback_id,
                        probes, redispatches, updated_at)
SELECT id, gid, 1400000000,
       CASE WHEN i % 100 BETWEEN 90 AND 94 THEN 'external' ELSE 'api' END,
       CASE WHEN i % 100 < 95 THEN 'confirmed' WHEN i % 100 < 98 THEN 'failed' ELSE 'unconfirmed' END,
       CASE WHEN i % 100 < 95 THEN 'callback' END,
       CASE WHEN i % 100 < 90 OR i % 100 >= 95 THEN 'cleanup' END,
       CASE WHEN i % 100 < 90 OR i % 100 >= 95 THEN 'svc-' || (i % 7) END,
       CASE WHEN i % 100 < 90 OR i % 100 >= 95 THEN ev - interval '400 milliseconds' END,
       CASE WHEN i % 100 < 90 OR i % 100 >= 95 THEN ev - interval '300 milliseconds' END,
       CASE WHEN i % 100 < 95 THEN ev + interval '80 milliseconds' END,
       CASE WHEN i % 100 BETWEEN 90 AND 94 THEN 0 ELSE 1 END,
       CASE WHEN i % 100 BETWEEN 95 AND 97 THEN 10004 END,
       CASE WHEN i % 100 BETWEEN 95 AND 97 THEN 'invalid parameter' END,
       CASE WHEN i % 100 < 95 THEN id END,
       0, 0, ev + interval '80 milliseconds'
FROM seed;

INSERT INTO group_members (dismissal_id, callback_id, group_id, account)
SELECT s.id, s.id, s.gid, 'user' || ((s.i * 3 + k) * 7919 % 200000)
FROM seed s CROSS JOIN generate_series(0, 2) AS k
ORDER BY s.i, k;
"""


def ensure_template(n: int = 1_000_000, *, reseed: bool = False) -> str:
    """The template database with the seed rows (built once; reused while SEED_VERSION holds)."""
    name = TEMPLATE if n == 1_000_000 else f"{TEMPLATE}_{n}"
    if db_exists(name) and not reseed:
        marker = psql("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                      f"WHERE datname = '{name}'").strip()
        if marker == f"complete {n}":
            log(f"seed: reusing template database {name} ({n:,} dismissals); --reseed rebuilds it")
            return name
    log(f"seed: building template database {name}: {n:,} callbacks, {n:,} dismissals, {3 * n:,} members")
    started = time.monotonic()
    create_db(name)
    migrate(pg_url(name))
    psql(_SQL.format(n=n), db=name, timeout=1800)
    psql("VACUUM ANALYZE", db=name, timeout=1800)
    psql(f"COMMENT ON DATABASE \"{name}\" IS 'complete {n}'")
    log(f"seed: built in {time.monotonic() - started:.0f} s")
    return name


def copy_of_template(db: str, n: int = 1_000_000, *, reseed: bool = False) -> str:
    template = ensure_template(n, reseed=reseed)
    started = time.monotonic()
    create_db(db, template=template)
    log(f"seed: {db} copied from {template} in {time.monotonic() - started:.1f} s")
    return db
