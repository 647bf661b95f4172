"""The job engine below the operators: submit, record, hold, watch, re-attach, resend and cancel AQuA jobs."""
