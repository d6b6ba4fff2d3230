-- Scalar macros shared by the staging models. Idempotent (create or replace).

-- Scrub contact details and secrets from free text before it is stored in staging.
-- Order matters: card numbers before phone numbers, so a card is not half-read as a phone.
create or replace macro redact_text(t) as
regexp_replace(
    regexp_replace(
        regexp_replace(
            regexp_replace(
                regexp_replace(
                    t,
                    '[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}',
                    '[email]',
                    'g'
                ),
                '\b(?:sk|pk|rk|ghp|gho|ghs|xox[abprs]|api|key|token)[_-][A-Za-z0-9_\-]{12,}\b',
                '[token]',
                'g'
            ),
            '\b\d(?:[ -]?\d){12,18}\b',
            '[card]',
            'g'
        ),
        '\b\d{1,3}(?:\.\d{1,3}){3}\b',
        '[ip]',
        'g'
    ),
    '(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\b\d{2,4}[ .-])\d{3,4}[ .-]?\d{3,4}\b',
    '[phone]',
    'g'
);

-- Salted, one-way key for a person: joins stay possible, the identity does not leave the source.
create or replace macro person_key(source_name, raw_id) as
case
    when raw_id is null then null
    else sha256(getvariable('hash_salt') || ':' || source_name || ':' || raw_id::varchar)
end;

-- Catalog globs use * for "anything"; LIKE needs % (and literal % / _ escaped).
create or replace macro glob_to_like(g) as
replace(replace(replace(g, '%', '\%'), '_', '\_'), '*', '%');
