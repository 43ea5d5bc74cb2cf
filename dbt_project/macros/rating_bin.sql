{#- Low below 3.0 stars, Medium from 3.0 to below 4.0, High from 4.0; NULL when unrated. -#}
{% macro rating_bin(average_rating) -%}
    case
        when {{ average_rating }} is null then null
        when {{ average_rating }} < 3.0 then 'Low'
        when {{ average_rating }} < 4.0 then 'Medium'
        else 'High'
    end
{%- endmacro %}
