"""The learner end of the link (protocol: `robot/wire.py`; the robot end: `robot/link/`), one role a module:

- `learner.LearnerServer`: the one ROUTER socket robots talk to: sessions, dispatch, counters, policy offers;
  `config.ServerConfig` bounds it;
- `ingest.EpisodeIngest`: episode uploads into the store (EP_BEGIN / CHUNK / EP_END, the ingest thread);
- `uploads`: a resumable upload on disk and its SHA-256 worker;
- `policies`: an artifact published as an immutable blob and served chunk by chunk;
- `inference.InferenceServer`: remote inference for policies too big for the robot PC;
- `cli.main`: `wvl serve`.
"""
