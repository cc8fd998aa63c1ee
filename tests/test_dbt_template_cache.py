"""dbt's Jinja templates are compiled once and kept on disk (`cache_dbt_templates` in
medflow_assets/transform/dbt_core.py): a later process renders from the stored code; a changed source, the other
environment class (dbt's native one), a corrupt file or a folder that cannot be written all compile as before."""

import jinja2
import pytest
from dbt_common.clients.jinja import MacroFuzzEnvironment, get_environment

from medflow_assets.settings import DBT_PROJECT_DIR
from medflow_assets.transform import dbt_core
from tests.helpers import SAMPLE_LANDING, materialize_graph, query

DOUBLE = "{% for i in [1, 2] %}{% if loop.last %}{{ x * i }}{% endif %}{% endfor %}"
TRIPLE = "{{ x * 3 }}"
X21, X14 = {"x": 21}, {"x": 14}


@pytest.fixture
def parses(monkeypatch):
    """Counts the templates Jinja generates Python code for (a template taken from the cache is not)."""
    seen = []
    real = MacroFuzzEnvironment._generate

    def counting(self, source, name, filename, defer_init=False):
        seen.append(name)
        return real(self, source, name, filename, defer_init=defer_init)

    monkeypatch.setattr(MacroFuzzEnvironment, "_generate", counting)
    return seen


@pytest.fixture
def cache_in(tmp_path):
    """The template cache in a folder of this test; the project's folder again afterwards."""
    folder = tmp_path / "jinja_cache"
    dbt_core.cache_dbt_templates(folder)
    yield folder
    dbt_core.cache_dbt_templates(DBT_PROJECT_DIR / "target" / "jinja_cache")


def test_a_template_compiled_once_renders_from_the_cache_in_any_new_environment(cache_in, parses):
    assert get_environment().from_string(DOUBLE).render(X21) == "42"
    assert len(list(cache_in.iterdir())) == 1 and len(parses) == 1
    assert get_environment().from_string(DOUBLE).render(X21) == "42"  # a new environment, as a new process has
    assert len(parses) == 1
    assert get_environment().from_string(TRIPLE).render(X14) == "42"  # another source is compiled
    assert len(parses) == 2 and len(list(cache_in.iterdir())) == 2
    # dbt's native environment generates other code for the same source: its own entry
    assert str(get_environment(native=True).from_string(DOUBLE).render(X21)) == "42"
    assert len(parses) == 3 and len(list(cache_in.iterdir())) == 3


def test_a_corrupt_or_unwritable_cache_only_means_compiling_again(cache_in, parses):
    get_environment().from_string(DOUBLE).render(X21)
    [stored] = list(cache_in.iterdir())
    stored.write_bytes(stored.read_bytes()[:40])  # cut short: Jinja's bucket cannot load it
    assert get_environment().from_string(DOUBLE).render(X21) == "42"
    assert len(parses) == 2
    for f in cache_in.iterdir():
        f.unlink()
    cache_in.rmdir()  # nowhere to write
    assert get_environment().from_string(TRIPLE).render(X14) == "42"
    assert len(parses) == 3


def test_a_template_error_still_names_the_template_line(cache_in):
    with pytest.raises(jinja2.TemplateSyntaxError) as e:
        get_environment().from_string("line one\n{% if %}")
    assert e.value.lineno == 2


def test_a_run_after_the_first_compiles_no_template_and_builds_the_same(tmp_path, parses):
    first = tmp_path / "first" / "wh.duckdb"  # one file name: the second run parses nothing again either
    assert materialize_graph(SAMPLE_LANDING, first).success
    compiled_before = len(parses)  # none when an earlier test or run filled the project's cache
    second = tmp_path / "second" / "wh.duckdb"
    assert materialize_graph(SAMPLE_LANDING, second).success
    assert len(parses) == compiled_before  # every macro, materialization and model came from the cache
    gold = "SELECT * EXCLUDE (through_load_id) FROM gold.claims_monthly_summary ORDER BY ALL"
    assert query(second, gold) == query(first, gold) != []
