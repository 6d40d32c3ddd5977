"""The benchmark behind `scripts/bench`: edged against llama.cpp's own tools and raw llama-cpp-python.

Modules, in the order a run uses them:
  settings      command-line settings and the fixed paths (repo, bench-work/, venv)
  procs         child processes (always killed on exit) and /proc readers (RSS, CPU ticks)
  load_monitor  is the machine idle? loadavg and the CPU time other processes use during the run
  machine       CPU, memory, kernel and version facts for the report
  build         llama-server and llama-bench built from the llama-cpp-python sdist's vendored llama.cpp
  llama_bench   runs llama-bench and parses its JSON
  prompts       the fixed chat prompts and the ~300-token system prompts of the prefix-cache scenario
  samples       one request's timings and the median/percentile summaries
  mosquitto     a throw-away broker on a free loopback port (the MQTT target)
  provision     device and client keys made with the real `edged keys` commands
  targets/      what is measured (registry: llama-server, raw llama-cpp-python, edged over the socket, the
                in-process engine, edged over MQTT sealed, edged per power profile, sealing, ONNX engine,
                edged's Wyoming server)
  scenarios/    what is done to each target (registry: chat, prefix-cache, added-ttft, sealed-socket,
                seal-cost, power-profiles, wyoming-latency, idle-cpu)
  model_update  model-update transfer throughput (real depot and device pull through a local mosquitto)
  compare       ratios between targets and edged's added TTFT; goals checks the performance targets
  report        the stdout table and docs/benchmarks.md (report_sections: edged's sections; tables: helpers);
                plots and plots_edged draw the PNGs
  cli           argument parsing and the run itself
"""
