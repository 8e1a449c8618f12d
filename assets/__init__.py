"""The shipped pipelines, declared with the library. One package per dataset."""
