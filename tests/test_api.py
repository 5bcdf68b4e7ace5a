"""The public API is small and documented."""
import inspect

import daam_fast


def test_all_is_exact():
    assert sorted(daam_fast.__all__) == sorted(["DAAM", "DAAMResult", "MemoryBank", "daam_reference", "render",
                                                "__version__", "Target", "ClassTarget", "TopK", "BankTarget",
                                                "LabelFree", "Score", "Similarity", "explore"])
    for name in daam_fast.__all__:
        assert hasattr(daam_fast, name)


def test_public_docstrings_have_shapes():
    for obj in (daam_fast.DAAM, daam_fast.DAAM.__call__, daam_fast.render, daam_fast.daam_reference,
                daam_fast.MemoryBank, daam_fast.DAAMResult, daam_fast.targets, daam_fast.TopK, daam_fast.Score,
                daam_fast.ClassTarget, daam_fast.BankTarget, daam_fast.LabelFree, daam_fast.Similarity, daam_fast.explore,
                daam_fast.explore.explore, daam_fast.explore.page_html):
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 80, obj
    assert "(B, L, h, w)" in inspect.getdoc(daam_fast.DAAMResult)
    assert "Example" in inspect.getdoc(daam_fast.DAAM)
