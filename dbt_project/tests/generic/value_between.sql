{#- Rows whose value falls outside [min_value, max_value] (NULLs pass; pair with not_null). -#}
{% test value_between(model, column_name, min_value, max_value) %}
select {{ column_name }} as out_of_range_value
from {{ model }}
where {{ column_name }} < {{ min_value }} or {{ column_name }} > {{ max_value }}
{% endtest %}
