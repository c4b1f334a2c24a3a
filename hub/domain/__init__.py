"""Pure domain: lifecycle, consent and minimisation, routing decisions, SLA policy, audit maths."""
