-- grain: one row per as_of_date x catalog feature x problem family; key: (as_of_date, feature_key,
-- problem). The detected problems of each as-of date, kept as history (see int_feature_problems).
select * from intermediate.int_feature_problems
