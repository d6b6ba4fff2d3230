-- grain: one row per account from the accounts files; key: account_key (as the usage events
-- carry it). Casts and normalises raw.accounts__accounts: arr as a double, plan and segment
-- lower case with underscores ('Mid-Market' -> 'mid_market'). The account name stays in this
-- vendor view and in raw; staging.stg_accounts, which the scores read, leaves it out.
with

source as (
    select * from raw.accounts__accounts
),

renamed as (
    select
        account_key,
        'accounts' as source,
        try_cast(payload ->> 'arr' as double) as arr,
        nullif(regexp_replace(lower(trim(payload ->> 'plan')), '[\s-]+', '_', 'g'), '') as plan,
        nullif(
            regexp_replace(lower(trim(payload ->> 'segment')), '[\s-]+', '_', 'g'), ''
        ) as segment,
        try_cast(nullif(trim(payload ->> 'updated_at'), '') as timestamptz) as updated_at,
        nullif(trim(payload ->> 'name'), '') as name,
        _source_file as source_file,
        _loaded_at as ingested_at,
        nullif(concat_ws(
            ',',
            case when nullif(trim(payload ->> 'arr'), '') is not null and try_cast(payload ->> 'arr' as double) is null then 'wrong_type:arr' end,
            type_check_ts(payload, '$.updated_at', 'updated_at')
        ), '') as type_error
    from source
)

select * from renamed
