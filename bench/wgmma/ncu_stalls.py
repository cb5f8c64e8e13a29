import csv,sys
rows=list(csv.reader(open(sys.argv[1])))
# find header row
hi=[i for i,r in enumerate(rows) if r and r[0]=="Address"][0]
h=rows[hi]; data=[r for r in rows[hi+1:] if len(r)==len(h)]
ia=h.index("Address"); isrc=h.index("Source"); iall=h.index("Warp Stall Sampling (All Samples)")
iex=h.index("Instructions Executed")
stall=[(j,c) for j,c in enumerate(h) if c.startswith("stall_") and "Not Issued" not in c]
tot=sum(float(r[iall] or 0) for r in data)
print("total samples",tot, "instructions", len(data))
top=sorted(data,key=lambda r:-float(r[iall] or 0))[:int(sys.argv[2]) if len(sys.argv)>2 else 40]
for r in top:
    s=float(r[iall] or 0)
    reasons=sorted(((float(r[j] or 0),c[6:]) for j,c in stall),reverse=True)[:3]
    print(f"{r[ia]:>6} {100*s/tot:5.1f}% ex={r[iex]:>9} {r[isrc][:60]:60s} "+" ".join(f"{c}:{100*v/tot:.1f}" for v,c in reasons if v>0))
# totals per reason
print("by reason:", " ".join(f"{c[6:]}:{100*sum(float(r[j] or 0) for r in data)/tot:.1f}" for j,c in stall if sum(float(r[j] or 0) for r in data)/tot>0.01))
