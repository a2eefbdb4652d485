"""Multi-process and multi-node work; what looks at one host alone lives one level up, in verify/.

- distributed: the all-reduce workers and their launcher (`python -m verify.cluster.distributed`), shared by
  the nccl check, `verify sweep` and the device scripts
- job: the job's topology (rank, world size, nodes), read from torchrun's or Slurm's environment
- jobrun: `verify run` as one rank of a multi-node job, the ranks' protocol through the job's store
- fleet: `verify fleet`, the merged report of many nodes' reports; flags failed, slow and mismatched nodes
- fleet_html: `verify fleet --html`, the fleet report as one self-contained HTML file
- sweep: `verify sweep`'s plan and verdict: which node or link makes the all-reduce slow or hang
- sweeprun: `verify sweep` as one rank of a multi-node job, the sweep's rounds timed for real
"""
