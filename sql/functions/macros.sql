-- Scalar macros shared by the staging models. Idempotent (create or replace).

-- Redaction happens once, at landing, by the Python redactor (tasks/redact.py, fl_redact in the
-- connectors' and file specs' record SQL): staging reads redacted text. The regex macro that used
-- to make a second pass here is gone.
drop macro if exists redact_text;

create or replace macro person_key(source_name, raw_id) as
case
    when raw_id is null then null
    else sha256(getvariable('hash_salt') || ':' || source_name || ':' || raw_id::varchar)
end;

-- Catalog globs use * for "anything"; LIKE needs % (and literal % / _ escaped).
create or replace macro glob_to_like(g) as
replace(replace(replace(g, '%', '\%'), '_', '\_'), '*', '%');

-- Type checks for the staging models: 'wrong_type:<name>' when the JSON value at `path` has a
-- type the model cannot read, else NULL (an absent field or JSON null is not a type error; the
-- suites' not-null rules judge those). The staging unions carry them in `type_error`, and the
-- suites quarantine such rows with that reason instead of letting the value become NULL.
create or replace macro type_is(json_type_name, accepted, name) as
case
    when not list_contains(list_append(accepted, 'NULL'), json_type_name)
        then 'wrong_type:' || name
end;

create or replace macro type_check(j, path, accepted, name) as
type_is(json_type(j, path), accepted, name);

-- A timestamp given as text: any other type, or text that does not parse, is a type error.
create or replace macro type_check_ts(j, path, name) as
case
    when
        json_type(j, path) not in ('VARCHAR', 'NULL')
        or (
            json_type(j, path) = 'VARCHAR'
            and nullif(trim(j ->> path), '') is not null
            and try_cast(j ->> path as timestamptz) is null
        )
        then 'wrong_type:' || name
end;

-- Epoch seconds as a timestamp, NULL when not a finite number in TIMESTAMPTZ's range (the CASE
-- keeps to_timestamp from failing the build). Not try(): the analyst snapshot is read by DuckDB
-- 1.1+, which cannot load a macro that uses it (tasks/db.py SNAPSHOT_STORAGE_VERSION).
create or replace macro epoch_ts(seconds) as
case
    when isfinite(seconds::double) and abs(seconds::double) < 9.2e12
        then to_timestamp(seconds::double)
end;

-- A timestamp given as epoch seconds: any other type, or a number out of range.
create or replace macro type_check_epoch(j, path, accepted, name) as
case
    when
        not list_contains(list_append(accepted, 'NULL'), json_type(j, path))
        or (
            json_type(j, path) <> 'NULL'
            and epoch_ts(try_cast(json_extract(j, path) as double)) is null
        )
        then 'wrong_type:' || name
end;

-- A text column landed from a JSON value (the typed raw columns of high-volume streams): an
-- object or an array arrives as its JSON text.
create or replace macro type_check_text(t, name) as
case
    when left(ltrim(t), 1) in ('{', '[') and json_valid(t) then 'wrong_type:' || name
end;

-- A vendor's enum value outside the canonical set, as kept for the quality warning's examples: the
-- value only when it looks like an enum word (letters, digits, `_`, `-`, spaces; no `@`, `.`, `+`
-- or run of four digits that contact details and ids need), else '[withheld]'; cut to 24
-- characters. Text is redacted at landing; this keeps free text out of the warnings.
create or replace macro enum_example(v) as
case
    when v is null then null
    when
        regexp_full_match(v, '[A-Za-z0-9][A-Za-z0-9_ -]{0,63}')
        and not regexp_matches(v, '[0-9]{4}')
        then left(v, 24)
    else '[withheld]'
end;

-- The rows an incremental usage rollup recomputes (tasks/transform.py build_usage_rollups):
-- with rollup_days set, events of those UTC days only; with rollup_loads set too, only from the
-- loads (ingested_at) that hold events of those days, as a range the raw tables' _loaded_at zone
-- maps skip to. Both NULL (a full build): every row.
create or replace macro in_rollup_scope(day, loaded) as
(
    getvariable('rollup_days') is null
    or list_contains(getvariable('rollup_days'), day)
)
and (
    getvariable('rollup_loads') is null
    or (
        loaded between list_min(getvariable('rollup_loads'))
        and list_max(getvariable('rollup_loads'))
        and list_contains(getvariable('rollup_loads'), loaded)
    )
);
