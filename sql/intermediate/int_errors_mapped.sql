-- grain: one row per error-tracker issue; key: issue_id. feature_key is null when unmapped.
-- An error maps by the URL path it happened on (catalog paths), else by its components.
with

errors as (
    select * from staging.stg_error_signals
),

rules as (
    select * from marts.feature_rules
    where signal in ('paths', 'bug_components')
),

matches as (
    select
        errors.issue_id,
        rules.feature_key,
        rules.feature_order,
        case rules.signal when 'paths' then 1 else 2 end as signal_rank
    from errors
    inner join rules
        on (
            rules.signal = 'paths'
            and lower(errors.url_path) like glob_to_like(rules.pattern) escape '\'
        )
        or (
            rules.signal = 'bug_components'
            and list_contains(
                list_transform(errors.components, lambda c: lower(c)), rules.pattern
            )
        )
),

first_match as (
    select
        issue_id,
        feature_key
    from matches
    qualify row_number() over (
        partition by issue_id order by signal_rank, feature_order, feature_key
    ) = 1
),

final as (
    select
        errors.*,
        first_match.feature_key
    from errors
    left join first_match on errors.issue_id = first_match.issue_id
)

select * from final
