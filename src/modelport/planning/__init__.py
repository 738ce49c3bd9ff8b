"""Intent to plan: the hardware catalog, sizing (estimated for LLMs, measured from
``modelport bench`` profiles for any model), the planner and the autoscaling decision.

Pure: it imports nothing but ``modelport.core``, so the control plane, tests and tools use it
alike."""
