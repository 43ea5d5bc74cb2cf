{#- Stable ids from natural keys, the same on every rebuild. -#}

{#- A category: a 64-bit hash of (taxonomy, path) (a collision fails the primary key, loudly). -#}
{% macro category_id(taxonomy, path) -%}
    hashtextextended({{ taxonomy }} || ':' || ({{ path }})::text, 0)
{%- endmacro %}

{#- An order (the purchases of one user at one instant): 'O<user_id>-<UTC time to the microsecond>'. -#}
{% macro order_id(user_id, ordered_at) -%}
    'O' || {{ user_id }}::text || '-' || to_char({{ ordered_at }} at time zone 'UTC', 'YYYYMMDD"T"HH24MISSUS')
{%- endmacro %}
