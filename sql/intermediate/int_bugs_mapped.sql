-- grain: one row per tracker issue; key: issue_id. feature_key is null when no catalog rule matched.
with

bugs as (
    select * from staging.stg_bug_issues
),

rules as (
    select * from marts.feature_rules
    where signal in ('bug_labels', 'bug_components')
),

matches as (
    select
        bugs.issue_id,
        rules.feature_key,
        rules.feature_order
    from bugs
    inner join rules
        on
            (rules.signal = 'bug_labels' and list_contains(bugs.labels, rules.pattern))
            or (
                rules.signal = 'bug_components'
                and list_contains(list_transform(bugs.components, lambda c: lower(c)), rules.pattern)
            )
),

first_match as (
    select
        issue_id,
        feature_key
    from matches
    qualify row_number() over (partition by issue_id order by feature_order, feature_key) = 1
),

final as (
    select
        bugs.*,
        first_match.feature_key,
        case bugs.severity when 's1' then 8.0 when 's2' then 4.0 when 's3' then 2.0 else 1.0 end
            as severity_weight
    from bugs
    left join first_match on bugs.issue_id = first_match.issue_id
)

select * from final
