-- Written by `make generated` (tasks/unions.py): a CTE per errors vendor of tasks/sources.py,
-- the rest from sql/staging/unions/stg_error_signals.sql. Edit those, not this file.
-- grain: one row per error-tracker issue (Sentry); key: issue_id ('sentry:<id>').
-- The error signal per feature: counts of events and affected users, where it happens, before
-- validation. type_error names the fields of a wrong JSON type (the stg_error_signals suite
-- quarantines those rows); a status or level outside Sentry's documented values becomes
-- 'unknown' (the row is kept) with the vendor's value, redacted and cut short, in
-- status_unknown / level_unknown for the suite's warning.
with

sentry as (
    select
        issue_id,
        source,
        url,
        title,
        culprit,
        level,
        status,
        n_events,
        n_users,
        first_seen_at,
        last_seen_at,
        url_path,
        components,
        is_deleted,
        type_error
    from staging.stg_sentry__issues
),

unioned as (
    select * from sentry
),

normalised as (
    select
        * replace (
            case
                when status is null or status in (
                    'unresolved', 'resolved', 'ignored', 'archived', 'reprocessing',
                    'pending_deletion', 'deletion_in_progress', 'pending_merge'
                ) then status
                else 'unknown'
            end as status,
            case
                when
                    level is null
                    or level in ('fatal', 'error', 'warning', 'info', 'debug', 'sample')
                    then level
                else 'unknown'
            end as level
        ),
        case
            when status not in (
                'unresolved', 'resolved', 'ignored', 'archived', 'reprocessing',
                'pending_deletion', 'deletion_in_progress', 'pending_merge'
            ) then enum_example(status)
        end as status_unknown,
        case
            when level not in ('fatal', 'error', 'warning', 'info', 'debug', 'sample')
                then enum_example(level)
        end as level_unknown
    from unioned
)

select * from normalised
