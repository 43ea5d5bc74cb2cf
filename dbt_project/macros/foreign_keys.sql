{#-
  Post-hook of the large fact tables (core.reviews, core.events, core.interactions): their foreign keys
  to core.users and core.products, each added when the table does not have it yet.

  A first build or a full refresh creates the table without them and loads every row; each constraint
  is then checked in one pass over the table (PostgreSQL's advice for bulk loads, "Populating a
  Database: Remove Foreign Key Constraints": a foreign key is checked in bulk more efficiently than row
  by row). Declared in the contract instead, the key was checked by a trigger per inserted row: at 10M
  reviews the statement that creates and fills core.interactions took about 11 minutes, of which the
  query itself was under one. Incremental builds find the constraints in place, so the rows a merge
  writes are checked as they are written. The names are PostgreSQL's own defaults
  (<table>_<column>_fkey), those of the constraints the contract used to declare.
-#}
{% macro ensure_foreign_keys(keys) %}
    {%- for column, parent in keys.items() %}
    do $$
    begin
        if not exists (select 1 from pg_constraint
                       where conrelid = '"{{ this.schema }}"."{{ this.identifier }}"'::regclass and conname = '{{ this.identifier }}_{{ column }}_fkey') then
            alter table {{ this }} add constraint {{ this.identifier }}_{{ column }}_fkey
                foreign key ({{ column }}) references {{ parent }} ({{ column }});
        end if;
    end
    $$;
    {%- endfor %}
{% endmacro %}
