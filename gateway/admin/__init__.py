"""The admin API (`service`, its proto conversions in `convert`) and `gatewayctl` (`ctl`, with
`ctl_common`, `ctl_rollouts`, `ctl_feedback`)."""
