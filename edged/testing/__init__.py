"""Test hooks the product must carry, in one place; each is switched on only by an EDGED_TEST_* variable."""
