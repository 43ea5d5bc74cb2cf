{#-
  on-run-start (dbt_project.yml): staging.parse_source_date(text), used by stg_products for the date a
  product was first available. It reads dates as sources write them ("March 7, 2019", "2019-03-07");
  anything else is NULL, never an error.
-#}
{% macro create_parse_date_function() %}
    create schema if not exists staging;
    create or replace function staging.parse_source_date(value text) returns date
    language plpgsql immutable parallel safe as $fn$
    begin
        if value ~ '^\d{4}-\d{2}-\d{2}$' then
            return value::date;
        elsif value ~* '^[a-z]+ \d{1,2}, \d{4}$' then
            return to_date(value, 'FMMonth FMDD, YYYY');
        end if;
        return null;
    exception when others then
        return null;
    end
    $fn$;
{% endmacro %}
