"""Per-domain recognizers: DC, IC and NER, trained independently per domain."""
