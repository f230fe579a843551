package config

import fgv1 "github.com/fleetgate/fleetgate/gen/fleetgate/v1"

// PoolUse is a pool with the backend settings that rules use it with, in configuration order.
type PoolUse struct {
	Pool     *fgv1.BackendAddressPool
	Settings []*fgv1.BackendHttpSettings
}

// PoolUses lists every pool with the settings its rules pair it with.
func PoolUses(gw *fgv1.Gateway) []PoolUse {
	settings := map[string]*fgv1.BackendHttpSettings{}
	for _, s := range gw.GetBackendHttpSettingsCollection() {
		settings[s.GetName()] = s
	}
	pairs := map[string][]string{}
	add := func(pool, set string) {
		for _, s := range pairs[pool] {
			if s == set {
				return
			}
		}
		pairs[pool] = append(pairs[pool], set)
	}
	maps := map[string]*fgv1.UrlPathMap{}
	for _, m := range gw.GetUrlPathMaps() {
		maps[m.GetName()] = m
	}
	for _, r := range gw.GetRequestRoutingRules() {
		if r.GetUrlPathMap() == "" {
			add(r.GetBackendAddressPool(), r.GetBackendHttpSettings())
			continue
		}
		m := maps[r.GetUrlPathMap()]
		add(m.GetDefaultBackendAddressPool(), m.GetDefaultBackendHttpSettings())
		for _, pr := range m.GetPathRules() {
			add(pr.GetBackendAddressPool(), pr.GetBackendHttpSettings())
		}
	}
	var out []PoolUse
	for _, p := range gw.GetBackendAddressPools() {
		pu := PoolUse{Pool: p}
		for _, s := range pairs[p.GetName()] {
			if set := settings[s]; set != nil {
				pu.Settings = append(pu.Settings, set)
			}
		}
		out = append(out, pu)
	}
	return out
}
